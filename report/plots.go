package report

import (
	"bytes"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	colTrain = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colVal   = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colGrey  = color.RGBA{R: 150, G: 150, B: 150, A: 255}
)

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// points pairs epochs with values, dropping non-finite ones (gonum rejects NaN,
// and a stage may not measure validation loss every epoch).
func points(epochs []int, vals []float64) plotter.XYs {
	var xy plotter.XYs
	for i, v := range vals {
		if i < len(epochs) && finite(v) {
			xy = append(xy, plotter.XY{X: float64(epochs[i]), Y: v})
		}
	}
	return xy
}

func render(p *plot.Plot, w, h vg.Length) ([]byte, error) {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// curvePNG plots train and validation loss against epoch; nil when the curve
// has no finite point.
func curvePNG(c Curve) ([]byte, error) {
	p := plot.New()
	p.Title.Text = c.Stage + " stage: loss per epoch"
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = "loss"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	drawn := false
	for _, s := range []struct {
		name string
		vals []float64
		col  color.Color
	}{{"train", c.Train, colTrain}, {"validation", c.Val, colVal}} {
		xy := points(c.Epochs, s.vals)
		if len(xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = s.col
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.name, l)
		drawn = true
	}
	if !drawn {
		return nil, nil
	}
	return render(p, 16*vg.Centimeter, 10*vg.Centimeter)
}

// calibrationPNG plots the observed rate of o = 1 against the mean predicted
// propensity per bin, with the diagonal a calibrated model would follow.
func calibrationPNG(bins []CalibBin) ([]byte, error) {
	var xy plotter.XYs
	for _, b := range bins {
		if finite(b.MeanPred) && finite(b.ObsRate) {
			xy = append(xy, plotter.XY{X: b.MeanPred, Y: b.ObsRate})
		}
	}
	if len(xy) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "Propensity calibration (validation)"
	p.X.Label.Text = "mean predicted propensity"
	p.Y.Label.Text = "observed rate of feedback"
	p.Add(plotter.NewGrid())
	// Bottom right: a model's points sit near the diagonal, leaving that corner empty.
	p.Legend.Top, p.Legend.Left = false, false
	diag, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 1}})
	if err != nil {
		return nil, err
	}
	diag.Color = colGrey
	diag.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	line, pts, err := plotter.NewLinePoints(xy)
	if err != nil {
		return nil, err
	}
	line.Color = colTrain
	pts.Color = colTrain
	pts.Shape = draw.CircleGlyph{}
	p.Add(diag, line, pts)
	p.Legend.Add("perfect calibration", diag)
	p.Legend.Add("model", line, pts)
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	return render(p, 12*vg.Centimeter, 12*vg.Centimeter)
}

// compareBarsPNG is a grouped bar chart: per method, mean R² and mean AUROC.
// Missing (NaN) means are drawn as zero-height bars.
func compareBarsPNG(methods []string, r2, auroc []float64) ([]byte, error) {
	clean := func(v []float64) plotter.Values {
		out := make(plotter.Values, len(v))
		for i, x := range v {
			if finite(x) {
				out[i] = x
			}
		}
		return out
	}
	p := plot.New()
	p.Title.Text = "Test R² and AUROC per method (mean over seeds)"
	p.Y.Label.Text = "score"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	w := vg.Points(18)
	for i, s := range []struct {
		name string
		vals []float64
		col  color.Color
	}{{"R²", r2, colTrain}, {"AUROC", auroc, colVal}} {
		bars, err := plotter.NewBarChart(clean(s.vals), w)
		if err != nil {
			return nil, err
		}
		bars.Color = s.col
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(2*i-1) / 2
		p.Add(bars)
		p.Legend.Add(s.name, bars)
	}
	p.NominalX(methods...)
	// Headroom above the tallest bar keeps the legend off the data.
	lo, hi := math.Min(0, p.Y.Min), math.Max(0, p.Y.Max)
	p.Y.Min, p.Y.Max = lo, hi+0.3*(hi-lo)
	width := max(12*vg.Centimeter, vg.Length(len(methods))*2.8*vg.Centimeter)
	return render(p, width, 10*vg.Centimeter)
}
