package chaos

import (
	"bytes"
	"image/color"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// timelineData is what a run's timeline.png shows.
type timelineData struct {
	start   time.Time // the cluster's start
	t0      time.Time // the first committed step: x = 0
	procs   []*proc
	events  []event
	commits []commit
}

var (
	colWorker = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colCoord  = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colStop   = color.RGBA{R: 190, G: 190, B: 190, A: 255}
	colFault  = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colLeave  = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colCommit = color.RGBA{R: 80, G: 80, B: 80, A: 255}
)

// writeTimeline draws the run's timeline.png: one lane per process (its
// life, grey while stopped, dashed red while cut off), kills (red x) and
// SIGTERMs (orange triangle), a lane of committed steps, and a red line
// at each fault.
func writeTimeline(res *RunResult) error {
	td := res.timeline
	if len(td.procs) == 0 {
		return nil
	}
	x := func(t time.Time) float64 { return t.Sub(td.t0).Seconds() }
	lane, names := timelineLanes(td.procs)
	p := plot.New()
	p.Title.Text = "chaos run " + strconv.Itoa(res.Run) + " (seed " + strconv.FormatUint(res.Seed, 10) + ")"
	p.X.Label.Text = "seconds after the first committed step"
	p.Add(plotter.NewGrid())
	seg := func(x0, x1, y float64, col color.Color, width vg.Length, dashed bool) error {
		return hline(p, x0, x1, y, col, width, dashed)
	}
	end := td.t0
	for _, pr := range td.procs {
		if pr.end.After(end) {
			end = pr.end
		}
	}
	for _, pr := range td.procs {
		col := color.Color(colWorker)
		if pr.role == RoleCoordinator {
			col = colCoord
		}
		e := pr.end
		if e.IsZero() {
			e = end
		}
		if err := seg(x(pr.start), x(e), float64(lane[pr.name]), col, vg.Points(5), false); err != nil {
			return err
		}
	}
	// stopped and cut periods, kills, leaves, faults
	open := map[string]time.Time{}
	var kills, terms plotter.XYs
	var faultLabels plotter.XYLabels
	for _, e := range td.events {
		y := float64(lane[e.Proc])
		switch e.What {
		case "stop", "cut":
			open[e.What+":"+e.Proc] = e.T
		case "cont", "heal":
			what := map[string]string{"cont": "stop", "heal": "cut"}[e.What]
			if t0, ok := open[what+":"+e.Proc]; ok {
				if err := seg(x(t0), x(e.T), y, map[string]color.Color{"stop": colStop, "cut": colFault}[what], vg.Points(5), what == "cut"); err != nil {
					return err
				}
				delete(open, what+":"+e.Proc)
			}
		case "kill":
			kills = append(kills, plotter.XY{X: x(e.T), Y: y})
		case "term":
			terms = append(terms, plotter.XY{X: x(e.T), Y: y})
		case "fault":
			l, err := plotter.NewLine(plotter.XYs{{X: x(e.T), Y: -0.5}, {X: x(e.T), Y: float64(len(names)) - 0.5}})
			if err != nil {
				return err
			}
			l.Color, l.Width, l.Dashes = colFault, vg.Points(0.8), []vg.Length{vg.Points(2), vg.Points(2)}
			p.Add(l)
			// labels of close faults on staggered rows
			row := float64(len(faultLabels.XYs) % 3)
			faultLabels.XYs = append(faultLabels.XYs, plotter.XY{X: x(e.T), Y: float64(len(names)) - 0.45 + 0.3*row})
			faultLabels.Labels = append(faultLabels.Labels, e.Note)
		}
	}
	for key, t0 := range open { // a stop or a cut still open at the end
		_, name, _ := strings.Cut(key, ":")
		y := float64(lane[name])
		if err := seg(x(t0), x(end), y, colStop, vg.Points(5), false); err != nil {
			return err
		}
	}
	var cs plotter.XYs
	for _, c := range td.commits {
		cs = append(cs, plotter.XY{X: x(c.T), Y: 0})
	}
	if err := addTimelineMarks(p, cs, kills, terms, faultLabels); err != nil {
		return err
	}
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.6, float64(len(names))+0.9
	h := vg.Length(len(names))*0.7*vg.Centimeter + 4*vg.Centimeter
	wt, err := p.WriterTo(22*vg.Centimeter, h, "png")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return err
	}
	return writeFile(filepath.Join(res.Dir, "timeline.png"), buf.Bytes())
}

// timelineLanes orders the lanes: the committed steps first, then the
// coordinators, then the workers, each by number.
func timelineLanes(procs []*proc) (map[string]int, []string) {
	names := []string{"committed"}
	lane := map[string]int{"": 0}
	ps := append([]*proc(nil), procs...)
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].role != ps[j].role {
			return ps[i].role == RoleCoordinator
		}
		return procNum(ps[i].name) < procNum(ps[j].name)
	})
	for _, p := range ps {
		if _, ok := lane[p.name]; !ok {
			lane[p.name] = len(names)
			names = append(names, p.name)
		}
	}
	return lane, names
}

// hline draws a horizontal segment of a lane.
func hline(p *plot.Plot, x0, x1, y float64, col color.Color, width vg.Length, dashed bool) error {
	l, err := plotter.NewLine(plotter.XYs{{X: x0, Y: y}, {X: x1, Y: y}})
	if err != nil {
		return err
	}
	l.Color, l.Width = col, width
	if dashed {
		l.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
	}
	p.Add(l)
	return nil
}

// addTimelineMarks draws the committed steps, kills and SIGTERMs as
// glyphs and the faults' labels.
func addTimelineMarks(p *plot.Plot, cs, kills, terms plotter.XYs, faultLabels plotter.XYLabels) error {
	for _, m := range []struct {
		xy    plotter.XYs
		shape draw.GlyphDrawer
		col   color.Color
		r     vg.Length
	}{{cs, draw.CircleGlyph{}, colCommit, 1.5}, {kills, draw.CrossGlyph{}, colFault, 5}, {terms, draw.TriangleGlyph{}, colLeave, 4}} {
		if len(m.xy) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(m.xy)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Shape, sc.GlyphStyle.Color, sc.GlyphStyle.Radius = m.shape, m.col, vg.Points(float64(m.r))
		p.Add(sc)
	}
	if len(faultLabels.XYs) > 0 {
		lb, err := plotter.NewLabels(faultLabels)
		if err != nil {
			return err
		}
		for i := range lb.TextStyle {
			lb.TextStyle[i].Color = colFault
			lb.TextStyle[i].Rotation = 0
			lb.TextStyle[i].Font.Size = vg.Points(7)
		}
		p.Add(lb)
	}
	return nil
}
