package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	colTrain = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colVal   = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colGrey  = color.RGBA{R: 150, G: 150, B: 150, A: 255}
	colDark  = color.RGBA{R: 60, G: 60, B: 60, A: 255}
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

// newPlot is a plot with the report's fonts and a grid.
func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	return p
}

// render draws p alone (no legend, or the plot's own).
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

// newLegend is a legend drawn outside a plot (renderLegendRight).
func newLegend() plot.Legend {
	l := plot.NewLegend()
	l.TextStyle.Font.Size = vg.Points(10)
	l.Top, l.Left = true, true
	l.Padding = vg.Points(3)
	return l
}

// renderLegendRight draws p with leg in a column to the right of the plot,
// at the height of the data area's top, so the legend hides no data. The
// plot's own legend is not used.
func renderLegendRight(p *plot.Plot, leg plot.Legend, w, h vg.Length) ([]byte, error) {
	c, err := draw.NewFormattedCanvas(w, h, "png")
	if err != nil {
		return nil, err
	}
	dc := draw.New(c)
	r := leg.Rectangle(dc)
	pad := vg.Points(8)
	lw := r.Max.X - r.Min.X + 2*pad
	p.Draw(draw.Crop(dc, 0, -lw, 0, 0))
	top := vg.Length(0)
	if p.Title.Text != "" {
		top = p.Title.TextStyle.Rectangle(p.Title.Text).Size().Y + p.Title.Padding
	}
	leg.Draw(draw.Crop(dc, w-lw+pad, -pad, 0, -top-pad))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tickLabel formats v with the decimals step needs.
func tickLabel(v, step float64) string {
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
		// A step of 0.25 or 0.025 needs one more.
		if s := step * math.Pow(10, float64(dec)); math.Abs(s-math.Round(s)) > 1e-6 {
			dec++
		}
	}
	if math.Abs(v) < step*1e-6 {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// niceTicker places major ticks at round values (1, 2, 2.5 or 5 times a
// power of ten), the widest step that still gives at least Min ticks in
// the axis range (at least 4).
type niceTicker struct{ Min int }

func (t niceTicker) Ticks(lo, hi float64) []plot.Tick {
	want := max(t.Min, 4)
	if !(hi > lo) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	step := math.Pow(10, math.Ceil(math.Log10(hi-lo)))
	for i := 0; i < 60; i++ {
		if int(math.Floor(hi/step+1e-9)-math.Ceil(lo/step-1e-9))+1 >= want {
			break
		}
		// 1 -> 0.5 -> 0.25 -> 0.2 -> 0.1 (times a power of ten)
		m := step / math.Pow(10, math.Floor(math.Log10(step)+1e-9))
		switch {
		case math.Abs(m-5) < 1e-6:
			step = step / 5 * 2.5
		case math.Abs(m-2.5) < 1e-6:
			step = step / 2.5 * 2
		default:
			step /= 2
		}
	}
	var ticks []plot.Tick
	for k := math.Ceil(lo/step - 1e-9); k*step <= hi+step*1e-9; k++ {
		v := k * step
		ticks = append(ticks, plot.Tick{Value: v, Label: tickLabel(v, step)})
	}
	return ticks
}

// epochTicker places ticks on whole epochs only: every 1, 2, 5, 10, 20,
// 50, ... epochs, at most 12 of them.
type epochTicker struct{}

func (epochTicker) Ticks(lo, hi float64) []plot.Tick {
	step := 1
	for (hi-lo)/float64(step) > 11 {
		switch strconv.Itoa(step)[0] {
		case '2':
			step = step / 2 * 5
		default: // 1 or 5
			step *= 2
		}
	}
	var ticks []plot.Tick
	for v := int(math.Ceil(lo/float64(step))) * step; float64(v) <= hi+1e-9; v += step {
		ticks = append(ticks, plot.Tick{Value: float64(v), Label: strconv.Itoa(v)})
	}
	return ticks
}

// quantile is the q-quantile of sorted values (linear interpolation).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	i := int(math.Floor(pos))
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

// clipFactor is how many times wider than the bulk of the values (the
// 10th to 90th percentile) their whole range must be before a loss plot
// clips its y axis.
const clipFactor = 100

// lossRange is the y range of a loss plot: the values' range with a
// margin, or, when the values explode (their range is more than
// clipFactor times the spread of their 10th-90th percentiles), the
// values within 10 such spreads of that bulk: clipped reports it.
func lossRange(vals []float64) (lo, hi float64, clipped bool) {
	v := slices.Clone(vals)
	slices.Sort(v)
	lo, hi = v[0], v[len(v)-1]
	q10, q90 := quantile(v, 0.1), quantile(v, 0.9)
	spread := q90 - q10
	if spread <= 0 {
		spread = math.Max(math.Abs(q90)*1e-3, 1e-12)
	}
	if hi-lo > clipFactor*spread {
		keepLo, keepHi := q10-10*spread, q90+10*spread
		lo, hi = math.Inf(1), math.Inf(-1)
		for _, x := range v {
			if x >= keepLo && x <= keepHi {
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
		}
		clipped = true
	}
	pad := 0.06 * (hi - lo)
	if pad == 0 {
		pad = math.Max(math.Abs(hi)*0.05, 1e-6)
	}
	return lo - pad, hi + pad, clipped
}

// triangle is a filled glyph pointing up or down: an off-scale value
// above or below the axis.
type triangle struct{ down bool }

func (t triangle) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	c.SetColor(sty.Color)
	r := sty.Radius
	if t.down {
		r = -r
	}
	var p vg.Path
	p.Move(vg.Point{X: pt.X - sty.Radius, Y: pt.Y - r})
	p.Line(vg.Point{X: pt.X + sty.Radius, Y: pt.Y - r})
	p.Line(vg.Point{X: pt.X, Y: pt.Y + r})
	p.Close()
	c.Fill(p)
}

// curvePNG plots train and validation loss against epoch, with the saved
// epoch marked and the legend right of the plot; nil when the curve has
// no finite point.
func curvePNG(c Curve) ([]byte, error) {
	type series struct {
		name string
		xy   plotter.XYs
		col  color.Color
	}
	var ss []series
	var all []float64
	for _, s := range []series{{"train", points(c.Epochs, c.Train), colTrain}, {"validation", points(c.Epochs, c.Val), colVal}} {
		if len(s.xy) == 0 {
			continue
		}
		ss = append(ss, s)
		for _, p := range s.xy {
			all = append(all, p.Y)
		}
	}
	if len(ss) == 0 {
		return nil, nil
	}
	ylo, yhi, clipped := lossRange(all)
	var off plotter.XYs // off-scale points, drawn at the edge
	var offUp, offDown plotter.XYs
	for _, s := range ss {
		for _, p := range s.xy {
			switch {
			case p.Y > yhi:
				offUp = append(offUp, plotter.XY{X: p.X, Y: yhi})
			case p.Y < ylo:
				offDown = append(offDown, plotter.XY{X: p.X, Y: ylo})
			}
		}
	}
	off = append(append(off, offUp...), offDown...)
	title := c.Stage + " stage: loss per epoch"
	if clipped {
		title += fmt.Sprintf("\n(y axis clipped to the bulk of the values; %d off scale)", len(off))
	}
	p := newPlot(title, "epoch", "loss (mean per row)")
	leg := newLegend()
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return nil, err
		}
		l.Color = s.col
		l.Width = vg.Points(1.5)
		p.Add(l)
		leg.Add(s.name, l)
		for _, pt := range s.xy {
			xmin, xmax = math.Min(xmin, pt.X), math.Max(xmax, pt.X)
		}
	}
	if c.Best > 0 {
		xmin, xmax = math.Min(xmin, float64(c.Best)), math.Max(xmax, float64(c.Best))
		var xys []plotter.XYs
		for _, s := range ss {
			xys = append(xys, s.xy)
		}
		if err := markSaved(p, &leg, c.Best, xys, ylo, yhi); err != nil {
			return nil, err
		}
	}
	for _, o := range []struct {
		xy    plotter.XYs
		shape draw.GlyphDrawer
		name  string
	}{{offUp, triangle{}, "above the axis"}, {offDown, triangle{down: true}, "below the axis"}} {
		if len(o.xy) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(o.xy)
		if err != nil {
			return nil, err
		}
		sc.Color = color.RGBA{R: 200, A: 255}
		sc.Shape = o.shape
		sc.Radius = vg.Points(4)
		p.Add(sc)
		leg.Add(fmt.Sprintf("%d %s", len(o.xy), o.name), sc)
	}
	p.X.Min, p.X.Max = xmin-0.5, xmax+0.5
	if xmax-xmin > 20 {
		pad := 0.02 * (xmax - xmin)
		p.X.Min, p.X.Max = xmin-pad, xmax+pad
	}
	p.X.Tick.Marker = epochTicker{}
	p.Y.Min, p.Y.Max = ylo, yhi
	p.Y.Tick.Marker = niceTicker{Min: 5}
	h := 10 * vg.Centimeter
	if clipped {
		h += vg.Centimeter
	}
	return renderLegendRight(p, leg, 18*vg.Centimeter, h)
}

// markSaved marks the saved (best) epoch on a loss plot: a dashed vertical
// line and a dot on each series at that epoch, with one legend entry.
func markSaved(p *plot.Plot, leg *plot.Legend, best int, series []plotter.XYs, ylo, yhi float64) error {
	vline, err := plotter.NewLine(plotter.XYs{{X: float64(best), Y: ylo}, {X: float64(best), Y: yhi}})
	if err != nil {
		return err
	}
	vline.Color = colDark
	vline.Width = vg.Points(1)
	vline.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(vline)
	var marks plotter.XYs
	for _, xy := range series {
		for _, pt := range xy {
			if pt.X == float64(best) && pt.Y >= ylo && pt.Y <= yhi {
				marks = append(marks, pt)
			}
		}
	}
	var thumbs []plot.Thumbnailer
	thumbs = append(thumbs, vline)
	if len(marks) > 0 {
		sc, err := plotter.NewScatter(marks)
		if err != nil {
			return err
		}
		sc.Color = colDark
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(3.5)
		p.Add(sc)
		thumbs = append(thumbs, sc)
	}
	leg.Add(fmt.Sprintf("saved: epoch %d", best), thumbs...)
	return nil
}

// calibErrors are the decile's predicted ranges as horizontal error bars.
type calibErrors []CalibBin

func (c calibErrors) Len() int                    { return len(c) }
func (c calibErrors) XY(i int) (float64, float64) { return c[i].MeanPred, c[i].ObsRate }
func (c calibErrors) XError(i int) (float64, float64) {
	return c[i].MeanPred - c[i].Lo, c[i].Hi - c[i].MeanPred
}

// calibrationPNG plots the observed rate of o = 1 against the mean predicted
// propensity per decile, each with its predicted range, beside the
// diagonal a calibrated model would follow.
func calibrationPNG(bins []CalibBin) ([]byte, error) {
	var ok calibErrors
	for _, b := range bins {
		if finite(b.MeanPred) && finite(b.ObsRate) && finite(b.Lo) && finite(b.Hi) {
			ok = append(ok, b)
		}
	}
	if len(ok) == 0 {
		return nil, nil
	}
	xy := make(plotter.XYs, len(ok))
	for i, b := range ok {
		xy[i] = plotter.XY{X: b.MeanPred, Y: b.ObsRate}
	}
	p := newPlot("Propensity calibration (validation deciles)", "predicted propensity p_hat", "observed rate of feedback (o = 1)")
	leg := newLegend()
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
	bars, err := plotter.NewXErrorBars(ok)
	if err != nil {
		return nil, err
	}
	bars.Color = colTrain
	bars.Width = vg.Points(1)
	p.Add(diag, bars, line, pts)
	leg.Add("perfect calibration", diag)
	leg.Add("decile: mean prediction", line, pts)
	rangeThumb, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 0}}) // a legend swatch only
	if err != nil {
		return nil, err
	}
	rangeThumb.LineStyle = bars.LineStyle
	leg.Add("decile's predicted range", rangeThumb)
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	p.X.Tick.Marker = niceTicker{Min: 5}
	p.Y.Tick.Marker = niceTicker{Min: 5}
	return renderLegendRight(p, leg, 18*vg.Centimeter, 12*vg.Centimeter)
}

// metricPanel is one metric's dot plot in compare.png: per method the
// mean over seeds with a ±std error bar, the y axis kept within the
// metric's possible range [lo, hi] (NaN: unbounded that way) and
// including ref, drawn as a dashed reference line.
type metricPanel struct {
	title    string
	means    []float64
	stds     []float64
	lo, hi   float64
	ref      float64
	refLabel string
}

func (mp metricPanel) plot(methods []string) (*plot.Plot, error) {
	p := newPlot(mp.title, "", mp.title)
	p.Title.Text = mp.title
	p.Y.Label.Text = ""
	var xy, exy plotter.XYs // the means, and those with an error bar
	var errs plotter.YErrors
	ymin, ymax := mp.ref, mp.ref
	for i, m := range mp.means {
		if !finite(m) {
			continue
		}
		xy = append(xy, plotter.XY{X: float64(i), Y: m})
		ymin, ymax = math.Min(ymin, m), math.Max(ymax, m)
		if s := mp.stds[i]; finite(s) && s > 0 {
			exy = append(exy, plotter.XY{X: float64(i), Y: m})
			errs = append(errs, struct{ Low, High float64 }{s, s})
			ymin, ymax = math.Min(ymin, m-s), math.Max(ymax, m+s)
		}
	}
	ref, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: mp.ref}, {X: float64(len(methods)) - 0.5, Y: mp.ref}})
	if err != nil {
		return nil, err
	}
	ref.Color = colGrey
	ref.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(ref)
	lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: -0.45, Y: mp.ref}}, Labels: []string{mp.refLabel}})
	if err != nil {
		return nil, err
	}
	lbl.TextStyle[0].Color = colGrey
	lbl.TextStyle[0].Font.Size = vg.Points(8)
	lbl.Offset = vg.Point{Y: vg.Points(3)} // above the line, not struck through
	lbl.TextStyle[0].YAlign = draw.YBottom
	p.Add(lbl)
	if len(xy) > 0 {
		sc, err := plotter.NewScatter(xy)
		if err != nil {
			return nil, err
		}
		sc.Color = colTrain
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(4)
		if len(exy) > 0 {
			eb, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{exy, errs})
			if err != nil {
				return nil, err
			}
			eb.Color = colTrain
			eb.Width = vg.Points(1.5)
			eb.CapWidth = vg.Points(10)
			p.Add(eb)
		}
		p.Add(sc)
		vals := make([]string, len(xy))
		for i, pt := range xy {
			vals[i] = fmt.Sprintf("  %.3f", pt.Y)
		}
		vl, err := plotter.NewLabels(plotter.XYLabels{XYs: xy, Labels: vals})
		if err != nil {
			return nil, err
		}
		vl.Offset = vg.Point{X: vg.Points(6)}
		for i := range vl.TextStyle {
			vl.TextStyle[i].Font.Size = vg.Points(8)
			vl.TextStyle[i].YAlign = draw.YCenter
		}
		p.Add(vl)
	}
	pad := math.Max(0.08*(ymax-ymin), 0.02)
	lo, hi := ymin-pad, ymax+pad
	if !math.IsNaN(mp.lo) {
		lo = math.Max(lo, mp.lo)
	}
	if !math.IsNaN(mp.hi) {
		hi = math.Min(hi, mp.hi)
	}
	p.Y.Min, p.Y.Max = lo, hi
	p.Y.Tick.Marker = niceTicker{Min: 5}
	p.X.Min, p.X.Max = -0.5, float64(len(methods))-0.5
	p.NominalX(methods...)
	p.X.Min, p.X.Max = -0.5, float64(len(methods))-0.5
	return p, nil
}

// compareMetricsPNG stacks two panels, test R² and AUROC per method: the
// mean over seeds with ±std error bars, each y axis within its metric's
// range (R² at most 1, AUROC in [0, 1]).
func compareMetricsPNG(methods []string, r2, r2std, auroc, aurocStd []float64, nseeds int) ([]byte, error) {
	over := fmt.Sprintf("mean ± std over %d seeds", nseeds)
	if nseeds < 2 {
		over = "1 seed: no error bars"
	}
	panels := []metricPanel{
		{title: "Test R² (" + over + ")", means: r2, stds: r2std, lo: math.NaN(), hi: 1, ref: 0, refLabel: "0: predicting the mean"},
		{title: "Test AUROC (" + over + ")", means: auroc, stds: aurocStd, lo: 0, hi: 1, ref: 0.5, refLabel: "0.5: chance"},
	}
	w := max(14*vg.Centimeter, vg.Length(len(methods))*2.6*vg.Centimeter)
	ph := 8 * vg.Centimeter
	c, err := draw.NewFormattedCanvas(w, vg.Length(len(panels))*ph, "png")
	if err != nil {
		return nil, err
	}
	dc := draw.New(c)
	for i, mp := range panels {
		p, err := mp.plot(methods)
		if err != nil {
			return nil, err
		}
		top := vg.Length(i) * ph
		// A gap between the panels keeps one's method names off the next one's title.
		p.Draw(draw.Crop(dc, 0, 0, vg.Length(len(panels)-1-i)*ph, -top-vg.Points(6)))
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
