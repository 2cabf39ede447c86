package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tinyData simulates a small data file in dir.
func tinyData(t *testing.T, dir string) string {
	t.Helper()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "400", "--test-rows", "100", "--dim", "8", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	return data
}

// tree lists every path under dir with its content (directories as "/").
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			out[p] = "/"
		} else {
			raw, _ := os.ReadFile(p)
			out[p] = string(raw)
		}
		return nil
	})
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if w, ok := after[p]; !ok {
			t.Errorf("%s deleted %s", what, p)
		} else if w != v {
			t.Errorf("%s changed %s", what, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s wrote %s", what, p)
		}
	}
}

// --force replaces only a previous run's output: an --out holding an input
// of the run, someone else's files, or the current directory is refused
// before training, naming the offending file, and nothing is touched.
func TestForceReplacesOnlyRunOutput(t *testing.T) {
	dir := t.TempDir()
	data := tinyData(t, dir)
	raw, _ := os.ReadFile(data)
	train := func(args ...string) (string, error) {
		return run(t, append([]string{"train", "--max-epochs", "1", "--hidden", "4,2", "--batch", "64"}, args...)...)
	}
	refused := func(what string, want string, args ...string) {
		t.Helper()
		before := tree(t, dir)
		log, err := train(args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: got %v, want an error with %q\n%s", what, err, want, log)
		}
		if strings.Contains(log, "loaded ") || strings.Contains(log, "stage ") {
			t.Errorf("%s: refused only after loading or training:\n%s", what, log)
		}
		sameTree(t, what, before, tree(t, dir))
	}

	// The report's case: the data and a note in --out.
	ddir := filepath.Join(dir, "d")
	os.Mkdir(ddir, 0o755)
	d := filepath.Join(ddir, "d.safetensors")
	os.WriteFile(d, raw, 0o644)
	os.WriteFile(filepath.Join(ddir, "notes.txt"), []byte("mine"), 0o644)
	refused("--out holding --data", fmt.Sprintf("--out %s: holds %s, an input of this run; refusing to replace it", ddir, d),
		"--data", d, "--out", ddir, "--force")
	refused("--out is --data", fmt.Sprintf("--out %s: is %s, an input of this run", d, d),
		"--data", d, "--out", d, "--force")
	// Someone else's directory.
	res := filepath.Join(dir, "results")
	os.Mkdir(res, 0o755)
	os.WriteFile(filepath.Join(res, "thesis.tex"), []byte("mine"), 0o644)
	refused("someone else's directory", fmt.Sprintf("--out %s: holds %s, which no causalrm run wrote; refusing to replace it",
		res, filepath.Join(res, "thesis.tex")), "--data", data, "--out", res, "--force")
	before := tree(t, dir)
	if log, err := run(t, "compare", "--data", data, "--seeds", "1", "--methods", "naive", "--max-epochs", "1",
		"--hidden", "4,2", "--out", res, "--force"); err == nil || !strings.Contains(err.Error(), "thesis.tex") {
		t.Fatalf("compare into someone else's directory: %v\n%s", err, log)
	}
	sameTree(t, "compare", before, tree(t, dir))

	// The current directory, empty or not, and one holding it.
	empty := filepath.Join(dir, "empty")
	os.MkdirAll(filepath.Join(empty, "sub"), 0o755)
	t.Chdir(filepath.Join(empty, "sub"))
	refused("--out .", "--out .: is the current directory; refusing to replace it", "--data", data, "--out", ".", "--force")
	refused("--out ..", "--out ..: holds the current directory", "--data", data, "--out", "..", "--force")
	os.Chdir(dir)

	// A previous run is replaced; its manifest lists what it wrote.
	out := filepath.Join(dir, "run")
	if log, err := train("--data", data, "--out", out); err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	var m runManifest
	mraw, err := os.ReadFile(filepath.Join(out, runMarker))
	if err != nil || json.Unmarshal(mraw, &m) != nil {
		t.Fatalf("no manifest: %v %s", err, mraw)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		if e.Name() != runMarker {
			names = append(names, e.Name())
		}
	}
	if m.Tool != "causalrm" || !slices.Equal(m.Files, names) || !slices.Contains(m.Files, "reward.safetensors") {
		t.Fatalf("manifest %+v, directory %v", m, names)
	}
	refused("a previous run without --force", "use --force to replace it", "--data", data, "--out", out)
	if log, err := train("--data", data, "--out", out, "--force", "--seed", "2"); err != nil {
		t.Fatalf("train --force over a previous run: %v\n%s", err, log)
	}
	if jraw, _ := os.ReadFile(filepath.Join(out, "job.yaml")); !strings.Contains(string(jraw), "seed: 2") {
		t.Fatalf("the previous run was not replaced:\n%s", jraw)
	}
	// ... but not a file someone added to it, nor its job file used as input.
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	refused("a run directory with a note", fmt.Sprintf("holds %s, which no causalrm run wrote", filepath.Join(out, "notes.txt")),
		"--data", data, "--out", out, "--force")
	os.Remove(filepath.Join(out, "notes.txt"))
	job := filepath.Join(out, "job.yaml")
	refused("--config inside --out", fmt.Sprintf("--out %s: holds %s, an input of this run", out, job), "--config", job, "--force")
	if entries, _ := os.ReadDir(dir); len(entries) != 5 { // data, d, results, empty, run
		t.Fatalf("left behind: %v", entries)
	}
}

// A directory written by an older causalrm (no manifest, only the files
// runs write) counts as a previous run; a stray file in it does not.
func TestCheckOutOlderRun(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"metrics.json", "reward.safetensors", "reward.json", "job.yaml", "report.md", "curve_reward_naive.png"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	if err := checkOut(dir, true, nil); err != nil {
		t.Fatalf("an older run's output: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "data.jsonl"), []byte("x"), 0o644)
	if err := checkOut(dir, true, nil); err == nil || !strings.Contains(err.Error(), "data.jsonl") {
		t.Fatalf("a stray file: %v", err)
	}
	os.Remove(filepath.Join(dir, "metrics.json"))
	os.Remove(filepath.Join(dir, "data.jsonl"))
	if err := checkOut(dir, true, nil); err == nil {
		t.Fatal("a directory without any metrics file was taken for a run")
	}
}

// commitOut replaces a previous run whole, and refuses one someone wrote
// into while the run went on.
func TestCommitOut(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	var discard strings.Builder
	commit := func(content string) error {
		staging, err := prepareOut(out, true, nil, &discard)
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(staging)
		os.WriteFile(filepath.Join(staging, "metrics.json"), []byte(content), 0o644)
		return commitOut(staging, out)
	}
	if err := commit("1"); err != nil {
		t.Fatal(err)
	}
	if err := commit("2"); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(filepath.Join(out, "metrics.json")); string(raw) != "2" {
		t.Fatalf("metrics.json %q", raw)
	}
	staging, err := prepareOut(out, true, nil, &discard)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(out, "late.txt"), []byte("mine"), 0o644) // written during the run
	if err := commitOut(staging, out); err == nil || !strings.Contains(err.Error(), "late.txt") {
		t.Fatalf("commit over a late file: %v", err)
	}
	os.RemoveAll(staging)
	if raw, _ := os.ReadFile(filepath.Join(out, "late.txt")); string(raw) != "mine" {
		t.Fatal("the late file is gone")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

// A run killed with SIGKILL leaves its staging directory; the next run to
// the same --out removes it (its process is gone) and says so, and leaves
// alone those it cannot judge: a live process's, another host's, an older
// causalrm's.
func TestStaleStagingRemoved(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if log, err := run(t, "simulate", "--rows", "4000", "--test-rows", "200", "--dim", "16", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, log)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command(os.Args[0], "train", "--data", data, "--out", out, "--max-epochs", "100000", "--patience", "100000", "--quiet")
	cmd.Env = append(os.Environ(), "CAUSALRM_TEST_AS_CLI=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	staged := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, ".out.partial-*"))
		return m
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(staged()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := staged()
	if len(killed) != 1 {
		t.Fatalf("the killed run's staging directories: %v", killed)
	}
	if !strings.Contains(killed[0], "_"+strconv.Itoa(cmd.Process.Pid)+"_") {
		t.Fatalf("%s does not name its owner, process %d", killed[0], cmd.Process.Pid)
	}
	live := filepath.Join(dir, ".out.partial-"+ownerTag()+"-1")
	other := filepath.Join(dir, ".out.partial-otherhost_1_1-2")
	older := filepath.Join(dir, ".out.partial-123456")
	for _, p := range []string{live, other, older} {
		os.Mkdir(p, 0o755)
	}
	log, err := run(t, "train", "--data", data, "--out", out, "--max-epochs", "1", "--hidden", "4,2", "--quiet")
	if err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	if want := fmt.Sprintf("removed %s, left by an earlier run to out that died without cleaning up (process %d is gone)",
		killed[0], cmd.Process.Pid); !strings.Contains(log, want) {
		t.Errorf("stderr lacks %q:\n%s", want, log)
	}
	for _, want := range []string{"note: " + other + " is the staging directory of a run on host otherhost", "note: " + older} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q:\n%s", want, log)
		}
	}
	got := staged()
	slices.Sort(got)
	want := []string{live, other, older}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("staging directories after the next run: %v, want %v", got, want)
	}
}

// ownerGone: a reaped process is gone, this one and pid 1 are not, and a
// live id with another start time (a reused id) is gone.
func TestOwnerGone(t *testing.T) {
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	if !ownerGone(c.Process.Pid, "1") {
		t.Errorf("process %d (reaped) is not gone", c.Process.Pid)
	}
	start, err := procStart(1)
	if err != nil {
		t.Skip("no /proc:", err)
	}
	if ownerGone(1, start) || ownerGone(os.Getpid(), "1") {
		t.Error("a live process is gone")
	}
	if !ownerGone(1, start+"0") {
		t.Error("pid 1 with another start time (a reused id) is not gone")
	}
	if ownerGone(1, "0") {
		t.Error("pid 1 with an unknown start time is gone")
	}
	host, pid, st, ok := parseOwner(ownerTag() + "-123")
	if h, _ := os.Hostname(); !ok || host != cleanHost(h) || pid != os.Getpid() || st == "" {
		t.Errorf("parseOwner(ownerTag()): %q %d %q %v", host, pid, st, ok)
	}
	for _, bad := range []string{"123456", "a_b_c-1", "h_1-2", "h_1_x-2"} {
		if _, _, _, ok := parseOwner(bad); ok {
			t.Errorf("parseOwner(%q) ok", bad)
		}
	}
}
