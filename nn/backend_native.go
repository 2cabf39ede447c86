//go:build !openblas

package nn

const backendName = "gonum (pure Go)"

func setBLASThreads(int) {}
