package main

import (
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"testing"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
	"github.com/causalrm/causalrm/worker"
)

// FuzzJobYAML feeds job files to the job-file decoder and the settings'
// validation, and the same text, submitted, to the coordinators' check of a
// job spec. Invariants: a job or an error, never a panic; allocation
// bounded by the input's size; a job the CLI accepts is accepted by the
// coordinators, and survives the trip through a job spec unchanged.
func FuzzJobYAML(f *testing.F) {
	// TestMain sets CAUSALRM_TEST_AS_CLI for the worker processes of
	// train --workers, and a process started with it runs the CLI: so must
	// not the fuzzing processes this one starts.
	if fl := flag.Lookup("test.fuzz"); fl != nil && fl.Value.String() != "" {
		if v, ok := os.LookupEnv("CAUSALRM_TEST_AS_CLI"); ok {
			os.Unsetenv("CAUSALRM_TEST_AS_CLI")
			defer os.Setenv("CAUSALRM_TEST_AS_CLI", v)
		}
	}
	for _, s := range []string{
		readmeJob,
		"",
		"data: {train: d.safetensors}\nbatch: 1.5\n",
		"data: {train: d.safetensors}\nflip_rates: {rho01: 0.1}\n",
		"data: {train: d.safetensors}\nhidden: [1000000000]\n",
		"data: {train: d.safetensors}\nhidden: [65536, 1, 65536]\nbatch: 1048576\n",
		"data:\n  train: a.parquet\n  val: b.parquet\n  test: c.jsonl.gz\nout: runs/x\ncodec: zstd\nreduce: fast\nthreads: 2\nrisk: plain\n",
		"data: {train: d.safetensors}\nbatch: &b 64\nshards: *b\n",
		"data: {train: d.safetensors}\n<<: {batch: 3}\n",
		`{"data": {"train": "d.safetensors"}, "batch": 3, "hidden": [8, 4]}`,
		"data: {train: d.safetensors}\n---\nbatch: 3\n",
		"data: {train: d.safetensors}\nseed: 18446744073709551615\nlr: 1e-3\nweight_decay: 0\n",
		"data: {train: d.safetensors}\nmethod: CausalRM-DR\nflip_rates: {rho01: .1, rho10: 0x0}\n",
		"a: &a [*a, *a]\n",
		"data: {train: d.safetensors}\nhidden: !!str 5\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cmd := &cobra.Command{Use: "submit"}
		f := jobFlags{config: "job.yaml"}
		var codec string
		addJobFlags(cmd, &f, true)
		cmd.Flags().StringVar(&codec, "codec", "", "")
		job, err := resolveJobText(cmd, &f, raw)
		if err != nil && err.Error() == "" {
			t.Fatal("an error without a message")
		}
		shards := trainer.DefaultConfig().Shards
		if job != nil {
			shards = job.Shards
		}
		cfg, _ := json.Marshal(string(raw))
		submitted := state.JobSpec{ID: "j", Shards: shards, MinWorkers: 1, Config: cfg}
		serr := submitted.Validate()
		runtime.ReadMemStats(&ms1)
		if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 64<<20+64*uint64(len(raw)) {
			t.Fatalf("allocated %d bytes for %d bytes of input", d, len(raw))
		}
		if err != nil {
			return
		}
		if serr != nil {
			t.Fatalf("the CLI accepts the job, the coordinators refuse it: %v\n%s", serr, raw)
		}
		job.Progress = nil
		spec, err := jobSpecFor(job, "j", 1, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("the coordinators refuse the CLI's spec: %v", err)
		}
		back, err := worker.JobFromSpec(&spec)
		if err != nil {
			t.Fatalf("the workers refuse the CLI's spec: %v", err)
		}
		a, _ := json.Marshal(job)
		b, _ := json.Marshal(back)
		if string(a) != string(b) {
			t.Fatalf("the job changed on its way to the workers:\n%s\n%s", a, b)
		}
	})
}
