package trainer

import "math"

// Loss values are summed across rows on a fixed 2^-24 grid in int64 so that
// the sum, hence early stopping, does not depend on how rows are grouped.
const lossScale = 1 << 24

// lossLimit keeps one row's fixed-point loss far from int64 overflow even
// summed over 2^20 rows.
const lossLimit = 1 << 38

func fixedLoss(v float64) int64 {
	if math.IsNaN(v) {
		return math.MinInt64 / 4 // poisons the sum; caught by checkLoss
	}
	v = math.Max(-lossLimit, math.Min(lossLimit, v))
	return int64(math.RoundToEven(v * lossScale))
}

func fromFixed(s int64) float64 { return float64(s) / lossScale }
