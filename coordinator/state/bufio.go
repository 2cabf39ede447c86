package state

import (
	"bufio"
	"io"
)

func bufioReader(r io.Reader) byteReader { return bufio.NewReaderSize(r, 1<<20) }
