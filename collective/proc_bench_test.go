package collective

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/causalrm/causalrm/internal/gradgen"
)

// The multi-process benchmark: rank 0 is the test process, ranks 1..n-1
// are this test binary re-run as TestBenchWorkerProcess. Each child
// listens on 127.0.0.1:0, prints its address, reads the peer list from
// stdin, then runs the same calls as rank 0: barrier, SumInt64, repeated.
//
//	go test -run '^$' -bench AllReduceProcesses ./collective

const workerEnv = "COLLECTIVE_BENCH_WORKER"

func TestBenchWorkerProcess(t *testing.T) {
	spec := os.Getenv(workerEnv) // rank,elems,calls,codec,transport
	if spec == "" {
		t.Skip("only run as a child of BenchmarkAllReduceProcesses")
	}
	f := strings.Split(spec, ",")
	rank, _ := strconv.Atoi(f[0])
	elems, _ := strconv.Atoi(f[1])
	calls, _ := strconv.Atoi(f[2])
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(lis.Addr().String())
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if err := procRank(rank, strings.Split(strings.TrimSpace(line), " "), Codec(f[3]), Transport(f[4]), elems, calls, lis, nil); err != nil {
		t.Fatal(err)
	}
}

// procRank runs one rank's share of the benchmark; times, if set, gets
// each SumInt64's duration.
func procRank(rank int, peers []string, codec Codec, tr Transport, elems, calls int, lis net.Listener, times *[]time.Duration) error {
	cfg := DefaultConfig()
	cfg.RingID, cfg.Rank, cfg.Peers, cfg.Generation, cfg.Codec, cfg.Transport = "bench", rank, peers, 1, codec, tr
	cfg.Logger = slog.New(slog.DiscardHandler)
	if c, _ := strconv.Atoi(os.Getenv("COLLECTIVE_BENCH_CHUNK")); c > 0 { // experiments
		cfg.ChunkBytes, cfg.MaxMessageBytes = c, max(cfg.MaxMessageBytes, 2*c+4096)
	}
	r, err := New(cfg, lis)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx := context.Background()
	src := gradgen.FixedPoint(elems, uint64(rank+1))
	buf := make([]int64, elems)
	for i := 0; i < calls; i++ {
		copy(buf, src)
		if err := r.Barrier(ctx); err != nil {
			return err
		}
		start := time.Now()
		if err := r.SumInt64(ctx, buf); err != nil {
			return err
		}
		if times != nil {
			*times = append(*times, time.Since(start))
		}
	}
	return r.Barrier(ctx) // nobody closes while a peer still needs its bytes
}

func BenchmarkAllReduceProcesses(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, mib := range []int{1, 4, 16} {
			for _, codec := range losslessCodecs {
				for _, tr := range []Transport{TransportRaw, TransportGRPC} {
					b.Run(fmt.Sprintf("ranks=%d/MiB=%d/%s/%s", n, mib, codec, tr), func(b *testing.B) {
						const warm = 1
						calls := warm + b.N
						elems := mib << 20 / 8
						lis, err := net.Listen("tcp", "127.0.0.1:0")
						if err != nil {
							b.Fatal(err)
						}
						peers := []string{lis.Addr().String()}
						var children []*exec.Cmd
						var stdins []*os.File
						defer func() {
							for _, c := range children {
								c.Process.Kill()
								c.Wait()
							}
						}()
						for rank := 1; rank < n; rank++ {
							args := []string{"-test.run=^TestBenchWorkerProcess$", "-test.count=1"}
							if d := os.Getenv("COLLECTIVE_BENCH_PROFILE"); d != "" { // a CPU profile per child
								args = append(args, fmt.Sprintf("-test.cpuprofile=%s/rank%d.prof", d, rank))
							}
							c := exec.Command(os.Args[0], args...)
							c.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d,%s,%s", workerEnv, rank, elems, calls, codec, tr))
							c.Stderr = os.Stderr
							out, err := c.StdoutPipe()
							if err != nil {
								b.Fatal(err)
							}
							inR, inW, err := os.Pipe()
							if err != nil {
								b.Fatal(err)
							}
							c.Stdin = inR
							if err := c.Start(); err != nil {
								b.Fatal(err)
							}
							inR.Close()
							children = append(children, c)
							stdins = append(stdins, inW)
							br := bufio.NewReader(out)
							addr, err := br.ReadString('\n')
							if err != nil {
								b.Fatal(err)
							}
							peers = append(peers, strings.TrimSpace(addr))
							go func() { // the child's test output, shown if it fails
								var log strings.Builder
								io.Copy(&log, br)
								if s := log.String(); strings.Contains(s, "FAIL") {
									fmt.Fprint(os.Stderr, s)
								}
							}()
						}
						for _, w := range stdins {
							fmt.Fprintln(w, strings.Join(peers, " "))
							w.Close()
						}
						var times []time.Duration
						if err := procRank(0, peers, codec, tr, elems, calls, lis, &times); err != nil {
							b.Fatal(err)
						}
						for _, c := range children {
							if err := c.Wait(); err != nil {
								b.Fatalf("worker: %v", err)
							}
						}
						children = nil
						var total time.Duration
						for _, d := range times[warm:] {
							total += d
						}
						sec := total.Seconds() / float64(b.N)
						algbw := float64(mib<<20) / sec
						b.ReportMetric(sec*1e3, "ms/call")
						b.ReportMetric(algbw/1e6, "algMB/s")
						b.ReportMetric(algbw*2*float64(n-1)/float64(n)/1e6, "busMB/s")
						b.ReportMetric(0, "ns/op")
					})
				}
			}
		}
	}
}
