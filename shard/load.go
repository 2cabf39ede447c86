package shard

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Split names (the slots of a Dataset).
const (
	SplitTrain = "train"
	SplitVal   = "val"
	SplitTest  = "test"
)

// CanonicalSplit maps a split label found in a file to train, val or test.
// "validation" and "valid" are accepted for val.
func CanonicalSplit(label string) (string, bool) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "train":
		return SplitTrain, true
	case "val", "valid", "validation":
		return SplitVal, true
	case "test":
		return SplitTest, true
	}
	return "", false
}

// LoadSpec names the files of a job. The format follows the extension:
// .safetensors, .parquet, .jsonl / .ndjson (optionally .gz).
//
// Train is required. When the train file holds labelled splits (safetensors
// keys X_train/X_val/X_test, a Parquet "split" column, a JSONL "split" field)
// its val and test rows are used for the slots whose file is not named. A file
// named for Val or Test is read for its "val" (resp. "test") rows if labelled,
// for its only split if it holds one labelled split, or whole if unlabelled.
type LoadSpec struct {
	Train, Val, Test string
	// AllowEmptyVal accepts a missing or empty validation split (the caller
	// will carve one out of train); Dataset.Val is then a split with N = 0
	// and the train D. Train and test must never be empty.
	AllowEmptyVal bool
	// AllowNoTest accepts a file without test rows (scoring a file with a
	// saved model): Dataset.Test is then nil.
	AllowNoTest bool
	// AllowUnlabelled accepts splits without o, y or clean labels on any
	// row (rows to score with a saved model: id and x only); their O and Y
	// are 0 and Split.Unlabelled reports them. Without it such a split is
	// refused, naming the missing field.
	AllowUnlabelled bool

	// KeepX, when set, limits the embeddings loaded to some rows of each
	// split (a worker's virtual shards): it is called once per split with
	// the split's name (train, val or test) and row count n, and returns the
	// rows to keep as ranges within [0, n) that must not overlap (they are
	// taken in row order; empty ranges are ignored). Split.X then holds only
	// the kept rows, packed in row order, and Split.XIndex maps rows to
	// them (see Split). Every other column is loaded in full. nil: X holds
	// every row and XIndex is nil.
	//
	// Safetensors files are read only over the byte ranges of the kept rows,
	// so the embeddings of the other rows are never read and never checked
	// (non-finite values there go unnoticed); their shape still is. Parquet
	// and JSONL files are parsed whole, so every row's x is still checked
	// (length and finiteness), but only the kept rows are stored.
	KeepX func(split string, n int) []Range
}

// part is one split as read from a file, with row locations for errors.
type part struct {
	s    *Split
	rows []int32 // file row (or line) of each split row; nil: split row i is row i
	line bool
}

func (p *part) loc(i int) loc {
	r := i
	if p.rows != nil {
		r = int(p.rows[i])
	}
	return loc{file: p.s.Source, row: r, line: p.line}
}

// source is one open data file.
type source interface {
	// labels returns the row count of each canonical split label found in the
	// file; the single key "" means the file is unlabelled (one split).
	labels() map[string]int
	// read reads the rows of the labels in sel (label -> slot) into one part
	// per slot. wantD > 0 is the required embedding dimension; 0 lets the
	// first row decide. keep is LoadSpec.KeepX (see planKeep).
	read(sel map[string]string, wantD int, keep func(string, int) []Range) (map[string]*part, error)
	close() error
}

func openSource(path string) (source, error) {
	base := strings.ToLower(path)
	switch {
	case strings.HasSuffix(base, ".safetensors"):
		return openSafetensorsSource(path)
	case strings.HasSuffix(base, ".parquet"):
		return openParquetSource(path)
	case strings.HasSuffix(base, ".jsonl"), strings.HasSuffix(base, ".ndjson"),
		strings.HasSuffix(base, ".jsonl.gz"), strings.HasSuffix(base, ".ndjson.gz"):
		return openJSONLSource(path)
	}
	return nil, fileErr(path, "", "", ErrFormat, "unknown file type (want .safetensors, .parquet, .jsonl or .jsonl.gz)")
}

func labelList(m map[string]int) string {
	var ls []string
	for l := range m {
		if l == "" {
			l = "(unlabelled)"
		}
		ls = append(ls, l)
	}
	sort.Strings(ls)
	if len(ls) == 0 {
		return "none"
	}
	return strings.Join(ls, ", ")
}

// Load reads and validates the dataset named by spec. Every data error is a
// *RowError locating the offending file, row or line and field.
//
// Any file content gives a dataset or an error, never a panic or a hang, and
// what is allocated is bounded by the file's size: only regular files are
// opened (a FIFO, socket, device or directory is refused before opening);
// embeddings have dimension 1 at least; a safetensors header is at most
// 100 MiB and lists at most 4096 tensors; a JSONL line is at most 64 MiB;
// compressed data (Parquet pages, .gz) decodes to at most 16 MiB plus 64
// times its size; a Parquet file holds at most 4096 rows plus one per 4
// bytes; and every count and offset is checked against the bytes that hold
// it before anything is sized by it.
func Load(spec LoadSpec) (*Dataset, error) {
	if spec.Train == "" {
		return nil, fmt.Errorf("shard: LoadSpec.Train is empty")
	}
	lp := &loadPlan{byPath: map[string]*loadJob{}}
	defer lp.close()
	tj, err := lp.planTrain(spec)
	if err != nil {
		return nil, err
	}
	if err := lp.planNamed(spec); err != nil {
		return nil, err
	}
	parts, err := lp.read(tj, spec)
	if err != nil {
		return nil, err
	}
	ds := &Dataset{Train: parts[SplitTrain].s}
	if ds.Test, err = testSplit(spec, parts[SplitTest]); err != nil {
		return nil, err
	}
	if ds.Val, err = valSplit(spec, parts[SplitVal], ds.Train.D); err != nil {
		return nil, err
	}
	if v := ds.Val; v.N == 0 && v.D != ds.Train.D && v.XIndex == nil {
		// An empty val file has no dimension of its own: the train one.
		v.D, v.X = ds.Train.D, []float32{}
	}
	if err := checkDuplicates([]*part{parts[SplitTrain], parts[SplitVal], parts[SplitTest]}); err != nil {
		return nil, err
	}
	return ds, nil
}

// loadJob is one file of a load: its open source and which of its split
// labels fill which slots.
type loadJob struct {
	path string
	src  source
	sel  map[string]string // label -> slot
}

// loadPlan is the files of a load in the order first named, each opened
// once however many slots it fills.
type loadPlan struct {
	jobs   []*loadJob
	byPath map[string]*loadJob
}

// get returns the job of path, opening the file the first time.
func (lp *loadPlan) get(path string) (*loadJob, error) {
	if j, ok := lp.byPath[path]; ok {
		return j, nil
	}
	src, err := openSource(path)
	if err != nil {
		return nil, err
	}
	j := &loadJob{path: path, src: src, sel: map[string]string{}}
	lp.jobs = append(lp.jobs, j)
	lp.byPath[path] = j
	return j, nil
}

// close closes every file opened.
func (lp *loadPlan) close() {
	for _, j := range lp.jobs {
		j.src.close()
	}
}

// assign has the rows of label fill slot, refusing rows that would fill
// two slots.
func (j *loadJob) assign(label, slot string) error {
	if prev, ok := j.sel[label]; ok && prev != slot {
		what := "the rows of " + j.path
		if label != "" {
			what = fmt.Sprintf("the %s rows of %s", label, j.path)
		}
		return fileErr(j.path, slot, "", ErrDuplicateID, "%s would be used for both %s and %s", what, prev, slot)
	}
	j.sel[label] = slot
	return nil
}

// planTrain opens the train file and assigns its rows: an unlabelled file
// is the train split; a labelled one gives its train rows, and its val and
// test rows to the slots whose file is not named.
func (lp *loadPlan) planTrain(spec LoadSpec) (*loadJob, error) {
	tj, err := lp.get(spec.Train)
	if err != nil {
		return nil, err
	}
	tl := tj.src.labels()
	if _, ok := tl[""]; ok {
		if err := tj.assign("", SplitTrain); err != nil {
			return nil, err
		}
		return tj, nil
	}
	if _, ok := tl[SplitTrain]; !ok {
		return nil, fileErr(spec.Train, SplitTrain, "", ErrEmptySplit, "holds no train rows (splits present: %s)", labelList(tl))
	}
	tj.assign(SplitTrain, SplitTrain)
	for _, slot := range []string{SplitVal, SplitTest} {
		named := spec.Val
		if slot == SplitTest {
			named = spec.Test
		}
		if _, ok := tl[slot]; ok && named == "" {
			tj.assign(slot, slot)
		}
	}
	return tj, nil
}

// planNamed opens the files named for val and test and assigns the rows
// each is read for (see LoadSpec).
func (lp *loadPlan) planNamed(spec LoadSpec) error {
	for _, slot := range []string{SplitVal, SplitTest} {
		path := spec.Val
		if slot == SplitTest {
			path = spec.Test
		}
		if path == "" {
			continue
		}
		j, err := lp.get(path)
		if err != nil {
			return err
		}
		label, err := namedLabel(path, slot, j.src.labels())
		if err != nil {
			return err
		}
		if err := j.assign(label, slot); err != nil {
			return err
		}
	}
	return nil
}

// namedLabel is the label of the rows a file named for slot is read for:
// all rows ("") if unlabelled, else its slot rows, else its only split.
func namedLabel(path, slot string, l map[string]int) (string, error) {
	label := ""
	if _, ok := l[""]; !ok {
		if _, ok := l[slot]; ok {
			label = slot
		} else if len(l) == 1 {
			for k := range l {
				label = k
			}
		} else {
			return "", fileErr(path, slot, "", ErrEmptySplit, "holds no %s rows (splits present: %s)", slot, labelList(l))
		}
	}
	return label, nil
}

// read reads every file's assigned rows into parts by slot. The first
// embedding dimension read is required of every later file, and the train
// split must have rows.
func (lp *loadPlan) read(tj *loadJob, spec LoadSpec) (map[string]*part, error) {
	parts := map[string]*part{}
	wantD := 0
	for _, j := range lp.jobs {
		got, err := j.src.read(j.sel, wantD, spec.KeepX)
		if err != nil {
			return nil, err
		}
		if !spec.AllowUnlabelled {
			for _, slot := range []string{SplitTrain, SplitVal, SplitTest} {
				if p := got[slot]; p != nil && p.s.unlabelled != nil {
					return nil, p.s.unlabelled
				}
			}
		}
		for slot, p := range got {
			parts[slot] = p
			if wantD == 0 && p.s.D > 0 {
				wantD = p.s.D
			}
		}
		if j == tj && (parts[SplitTrain] == nil || parts[SplitTrain].s.N == 0) {
			return nil, fileErr(spec.Train, SplitTrain, "", ErrEmptySplit, "the train split has no rows")
		}
	}
	return parts, nil
}

// testSplit is the dataset's test split from its part (nil: none read),
// which must have rows unless the spec allows no test split at all.
func testSplit(spec LoadSpec, p *part) (*Split, error) {
	switch {
	case p == nil && spec.AllowNoTest:
		return nil, nil // no test split: fine for scoring
	case p == nil:
		return nil, fileErr(spec.Train, SplitTest, "", ErrEmptySplit, "no test split: the file holds no test rows and LoadSpec.Test is empty")
	case p.s.N == 0:
		return nil, fileErr(p.s.Source, SplitTest, "", ErrEmptySplit, "the test split has no rows")
	}
	return p.s, nil
}

// valSplit is the dataset's validation split from its part (nil: none
// read): with AllowEmptyVal a missing one is an empty split of dimension d
// (with its KeepX plan), otherwise it must have rows.
func valSplit(spec LoadSpec, p *part, d int) (*Split, error) {
	if p != nil && (p.s.N > 0 || spec.AllowEmptyVal) {
		return p.s, nil
	}
	if !spec.AllowEmptyVal {
		if p == nil {
			return nil, fileErr(spec.Train, SplitVal, "", ErrEmptySplit, "no validation split: the file holds no val rows and LoadSpec.Val is empty (set AllowEmptyVal to split one off train)")
		}
		return nil, fileErr(p.s.Source, SplitVal, "", ErrEmptySplit, "the val split has no rows (set AllowEmptyVal to split one off train)")
	}
	v := emptySplit(SplitVal, d)
	kp, err := planKeep(spec.KeepX, SplitVal, 0)
	if err != nil {
		return nil, err
	}
	if kp != nil {
		v.XIndex = kp.index
	}
	return v, nil
}

func emptySplit(name string, d int) *Split {
	return &Split{Name: name, D: d, IDs: []string{}, X: []float32{}, O: []uint8{}, Y: []uint8{}}
}

// checkDuplicates reports the first id seen twice, naming both rows.
func checkDuplicates(parts []*part) error {
	n := 0
	for _, p := range parts {
		if p != nil {
			n += p.s.N
		}
	}
	type at struct{ p, i int }
	seen := make(map[string]at, n)
	for pi, p := range parts {
		if p == nil {
			continue
		}
		for i, id := range p.s.IDs {
			if prev, ok := seen[id]; ok {
				first := parts[prev.p].loc(prev.i)
				return p.loc(i).err(p.s.Name, "id", ErrDuplicateID, "duplicate id %q (first at %s)", id, first)
			}
			seen[id] = at{pi, i}
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Value checks shared by the readers.

// finite32 reports whether v is neither NaN nor infinite.
func finite32(v float32) bool { return math.Float32bits(v)&0x7f800000 != 0x7f800000 }

// firstNonFinite returns the index of the first NaN or Inf in x, or -1.
func firstNonFinite(x []float32) int {
	for i, v := range x {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// binary01 converts a label value, reporting whether it is 0 or 1.
func binary01(v float64) (uint8, bool) {
	switch v {
	case 0:
		return 0, true
	case 1:
		return 1, true
	}
	return 0, false
}

// propensity32 converts p, reporting whether the stored float32 lies in (0,1].
func propensity32(v float64) (float32, bool) {
	f := float32(v)
	return f, !math.IsNaN(v) && f > 0 && f <= 1
}

// rating32 converts a rating, reporting whether it is finite as a float32.
func rating32(v float64) (float32, bool) {
	f := float32(v)
	return f, finite32(f)
}

// fmtValue formats v briefly: values that are exact float32s (most data)
// in their shortest float32 form.
func fmtValue(v float64) string {
	if float64(float32(v)) == v {
		return strconv.FormatFloat(v, 'g', -1, 32)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
