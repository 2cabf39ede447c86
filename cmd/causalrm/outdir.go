package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Output directories.
//
// A command that writes a directory (train, compare) stages everything in
// a hidden sibling of --out and renames it into place once every file is
// written, so a failed or interrupted run leaves --out as it was. The
// committed directory holds a manifest, runMarker, listing the files the
// run wrote; --force replaces only such a directory, and only when it holds
// nothing else (a file someone added, an input of the new run).
//
// A staging directory is named .NAME.partial-OWNER-RAND, where OWNER is
// HOST_PID_START: the host name, the process id and the process's start
// time (in clock ticks since boot, from /proc/PID/stat). A run killed with
// SIGKILL, or by the kernel's out-of-memory killer, cannot remove it; the
// next run to the same --out on the same host removes it once its owner is
// gone: no process has that id, or the process that has it started at
// another time (the id was reused). The start time makes the check immune
// to pid reuse without locks, which are unreliable on network file
// systems, and the host name keeps a run on one host from judging another
// host's processes on a shared file system. Directories it cannot judge
// (another host's, an older causalrm's) are left alone, with a note.

// runMarker is the manifest a committed run directory holds.
const runMarker = ".causalrm-run"

// runManifest is runMarker's content.
type runManifest struct {
	Tool  string   `json:"tool"`
	Note  string   `json:"note"`
	Files []string `json:"files"`
}

const manifestNote = "written by causalrm: a later run with --force may replace this directory while it holds only these files"

// legacyOutputs are the files a run of a causalrm older than the manifest
// wrote; a directory holding only these (and one of the metrics files) is
// taken for such a run's output.
func legacyOutput(name string) bool {
	switch name {
	case "metrics.json", "job.yaml", "report.md", "compare.md", "compare.json", "compare.png", "bench.json",
		"propensity_calibration.png":
		return true
	}
	for _, stage := range []string{"reward", "propensity", "noise", "imputation"} {
		if name == stage+".safetensors" || name == stage+".json" {
			return true
		}
	}
	return strings.HasPrefix(name, "curve_") && strings.HasSuffix(name, ".png")
}

// jobInputs lists every file a run reads: its job file and its data.
func jobInputs(job *Job, config string) []string {
	in := job.Inputs()
	if config != "" {
		in = append([]string{config}, in...)
	}
	return in
}

// absPaths returns p made absolute, and also with its symbolic links
// resolved when that differs.
func absPaths(p string) []string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return []string{filepath.Clean(p)}
	}
	out := []string{abs}
	if r, err := filepath.EvalSymlinks(abs); err == nil && r != abs {
		out = append(out, r)
	}
	return out
}

// within reports whether path p is dir or lies under it (both absolute and
// clean).
func within(p, dir string) bool {
	if p == dir {
		return true
	}
	if !strings.HasSuffix(dir, string(filepath.Separator)) {
		dir += string(filepath.Separator)
	}
	return strings.HasPrefix(p, dir)
}

func anyWithin(ps, dirs []string) bool {
	for _, p := range ps {
		for _, d := range dirs {
			if within(p, d) {
				return true
			}
		}
	}
	return false
}

// checkOut refuses an --out that replacing (or writing) would destroy data:
// one that is, holds or lies inside an input of the run, the current
// directory or one holding it, a non-empty directory without force, and
// with force one that is not a previous run's output. It reads only: a
// refusal leaves everything as it was.
func checkOut(out string, force bool, inputs []string) error {
	if out == "" {
		return errors.New("no output directory: give --out DIR (or out: in the job file)")
	}
	outs := absPaths(out)
	if filepath.Dir(outs[0]) == outs[0] {
		return fmt.Errorf("--out %s: is the root directory; refusing to replace it", out)
	}
	for _, in := range inputs {
		ins := absPaths(in)
		switch {
		case anyWithin(ins, outs) && anyWithin(outs, ins):
			return fmt.Errorf("--out %s: is %s, an input of this run; refusing to replace it", out, in)
		case anyWithin(ins, outs):
			return fmt.Errorf("--out %s: holds %s, an input of this run; refusing to replace it", out, in)
		case anyWithin(outs, ins):
			return fmt.Errorf("--out %s: is inside %s, an input of this run; refusing to write there", out, in)
		}
	}
	if cwd, err := os.Getwd(); err == nil && anyWithin(absPaths(cwd), outs) {
		if anyWithin(outs, absPaths(cwd)) {
			return fmt.Errorf("--out %s: is the current directory; refusing to replace it (give a new directory)", out)
		}
		return fmt.Errorf("--out %s: holds the current directory; refusing to replace it (give a new directory)", out)
	}
	fi, err := os.Stat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("output %s exists and is not a directory", out)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	if len(entries) == 0 {
		return nil
	}
	foreign, err := foreignEntry(out, entries)
	if err != nil {
		return err
	}
	switch {
	case foreign != "":
		return fmt.Errorf("--out %s: holds %s, which no causalrm run wrote; refusing to replace it (move it away, or give another --out)",
			out, filepath.Join(out, foreign))
	case !force:
		return fmt.Errorf("output directory %s is not empty: it holds a previous run (use --force to replace it)", out)
	}
	return nil
}

// foreignEntry returns the first entry of dir that no run wrote ("" when
// dir is a previous run's output): with a manifest, any entry it does not
// list; without one (an older causalrm), any entry that is not one of the
// files runs write, or the manifest's name when dir has no metrics file.
func foreignEntry(dir string, entries []fs.DirEntry) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, runMarker))
	switch {
	case err == nil:
		var m runManifest
		if err := json.Unmarshal(raw, &m); err != nil || m.Tool != "causalrm" {
			return runMarker, nil // not ours after all
		}
		for _, e := range entries {
			if e.Name() != runMarker && !slices.Contains(m.Files, e.Name()) {
				return e.Name(), nil
			}
		}
		return "", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("--out %s: %w", dir, err)
	}
	metrics := false
	for _, e := range entries {
		if !e.Type().IsRegular() || !legacyOutput(e.Name()) {
			return e.Name(), nil
		}
		switch e.Name() {
		case "metrics.json", "compare.json", "bench.json":
			metrics = true
		}
	}
	if !metrics {
		return entries[0].Name(), nil
	}
	return "", nil
}

// prepareOut checks out (checkOut), removes the staging directories of
// earlier runs to out that died without cleaning up, and returns a new
// staging directory that commitOut renames into out.
func prepareOut(out string, force bool, inputs []string, log io.Writer) (string, error) {
	if err := checkOut(out, force, inputs); err != nil {
		return "", err
	}
	parent := filepath.Dir(absPaths(out)[0])
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	cleanStale(parent, filepath.Base(filepath.Clean(out)), log)
	return os.MkdirTemp(parent, stagingPrefix(filepath.Base(filepath.Clean(out)))+ownerTag()+"-*")
}

// commitOut writes the manifest into the staging directory and moves it
// into place. A previous run's output at out is moved aside first and
// removed last, and only when it still holds nothing but that run's files;
// if the move fails the old output is put back.
func commitOut(staging, out string) error {
	entries, err := os.ReadDir(staging)
	if err != nil {
		return err
	}
	m := runManifest{Tool: "causalrm", Note: manifestNote, Files: []string{}}
	for _, e := range entries {
		if e.Name() != runMarker {
			m.Files = append(m.Files, e.Name())
		}
	}
	if err := writeJSON(filepath.Join(staging, runMarker), m); err != nil {
		return err
	}
	old, err := os.ReadDir(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.Rename(staging, out)
	case err != nil:
		return err
	case len(old) == 0:
		if err := os.Remove(out); err != nil {
			return err
		}
		return os.Rename(staging, out)
	}
	if foreign, err := foreignEntry(out, old); err != nil {
		return err
	} else if foreign != "" {
		return fmt.Errorf("--out %s: now holds %s, which no causalrm run wrote (it changed during the run); refusing to replace it",
			out, filepath.Join(out, foreign))
	}
	parent := filepath.Dir(filepath.Clean(out))
	// A fresh name for the old output (os.Rename does not replace a
	// directory, so the one MkdirTemp made is removed first). It is a
	// staging name of this process: cleanStale removes it if this process
	// dies before it does.
	aside, err := os.MkdirTemp(parent, stagingPrefix(filepath.Base(filepath.Clean(out)))+ownerTag()+"-old*")
	if err != nil {
		return err
	}
	if err := os.Remove(aside); err != nil {
		return err
	}
	if err := os.Rename(out, aside); err != nil {
		return err
	}
	if err := os.Rename(staging, out); err != nil {
		if rerr := os.Rename(aside, out); rerr != nil {
			return fmt.Errorf("%w (and the previous output could not be put back: it is in %s)", err, aside)
		}
		return err
	}
	return os.RemoveAll(aside)
}

// stagingPrefix is the name prefix of out's staging directories.
func stagingPrefix(base string) string { return "." + base + ".partial-" }

// ownerTag names this process in its staging directories: HOST_PID_START.
func ownerTag() string {
	host, _ := os.Hostname()
	start, err := procStart(os.Getpid())
	if err != nil {
		start = "0"
	}
	return cleanHost(host) + "_" + strconv.Itoa(os.Getpid()) + "_" + start
}

// cleanHost keeps a host name's letters, digits, dots and dashes (at most
// 64 bytes), so that '_' separates the owner tag's fields.
func cleanHost(h string) string {
	var b strings.Builder
	for _, c := range h {
		if b.Len() >= 64 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "host"
	}
	return b.String()
}

// procStart is the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat).
func procStart(pid int) (string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (the state)
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return f[19], nil
}

// ownerGone reports whether the process that made a staging directory
// (pid, with start time start; "0": unknown) has ended. It errs on the side
// of "alive": a directory is removed only when its owner is surely gone.
func ownerGone(pid int, start string) bool {
	if pid <= 0 || pid == os.Getpid() {
		return false
	}
	now, err := procStart(pid)
	if err == nil {
		return start != "0" && now != start // the id now names another process
	}
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat("/proc/self/stat"); serr == nil {
			return true // /proc is there and has no such process
		}
	}
	// No /proc: ask the kernel whether the id is in use.
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// parseOwner splits a staging directory's name (after the prefix) into its
// owner; ok is false for a name in another format (an older causalrm's).
func parseOwner(rest string) (host string, pid int, start string, ok bool) {
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return "", 0, "", false
	}
	f := strings.Split(rest[:i], "_")
	if len(f) != 3 {
		return "", 0, "", false
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		return "", 0, "", false
	}
	if _, err := strconv.ParseUint(f[2], 10, 64); err != nil {
		return "", 0, "", false
	}
	return f[0], pid, f[2], true
}

// cleanStale removes the staging directories of earlier runs to parent/base
// whose owner is gone, saying so on log, and notes the ones it cannot judge.
func cleanStale(parent, base string, log io.Writer) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	prefix := stagingPrefix(base)
	host, _ := os.Hostname()
	host = cleanHost(host)
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, prefix) {
			continue
		}
		path := filepath.Join(parent, name)
		h, pid, start, ok := parseOwner(strings.TrimPrefix(name, prefix))
		switch {
		case !ok:
			fmt.Fprintf(log, "note: %s looks like the staging directory of a run to %s by an older causalrm; left alone (remove it if no run is writing %s)\n",
				path, base, base)
		case h != host:
			fmt.Fprintf(log, "note: %s is the staging directory of a run on host %s; left alone (remove it if that run has ended)\n", path, h)
		case ownerGone(pid, start):
			if err := os.RemoveAll(path); err != nil {
				fmt.Fprintf(log, "warning: could not remove %s, left by an earlier run that died (process %d): %v\n", path, pid, err)
				continue
			}
			fmt.Fprintf(log, "removed %s, left by an earlier run to %s that died without cleaning up (process %d is gone)\n", path, base, pid)
		}
	}
}
