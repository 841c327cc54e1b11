package loadgen_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"

	"mssrelay/relay/loadgen"
)

// -loadgen.cpuprofile profiles only the timed SMTP phase (go test's own
// -cpuprofile would also record the RSA signing of Prepare):
//
//	go test ./relay/loadgen -run '^$' -bench InProcess -benchtime 4000x \
//	    -loadgen.cpuprofile /tmp/relay.pprof
//	go tool pprof -top /tmp/relay.pprof
var cpuProfile = flag.String("loadgen.cpuprofile", "", "write a CPU profile of the timed SMTP phase of BenchmarkInProcess to this file")

// BenchmarkInProcess runs the load tool against a relay in the same
// process (client and server share the CPUs, as with `mssrelay bench` on
// one machine): b.N signed 10–30 KiB prescriptions, half RSA-2048, half
// P-256, prepared before the timer starts.
func BenchmarkInProcess(b *testing.B) {
	for _, tc := range []struct {
		clients, perConn int
	}{{1, 0}, {32, 0}, {32, 1}} {
		b.Run(fmt.Sprintf("clients=%d/per-conn=%d", tc.clients, tc.perConn), func(b *testing.B) {
			info := startRelay(b)
			batch, err := loadgen.Prepare(loadgen.Config{N: b.N, From: info.Prescriber.Address, To: info.Pharmacy.Address,
				Signers: demoSigners(b, info, loadgen.KeysBoth)})
			if err != nil {
				b.Fatal(err)
			}
			o := smtpOptions(b, info)
			o.Concurrency, o.PerConn = tc.clients, tc.perConn
			stop := startProfile(b)
			b.ResetTimer()
			r, err := loadgen.RunSMTP(context.Background(), batch, o)
			b.StopTimer()
			stop()
			if err != nil {
				b.Fatal(err)
			}
			if r.Accepted != b.N {
				b.Fatalf("accepted %d of %d: refused %v, errors %v", r.Accepted, b.N, r.Refused, r.Errors)
			}
			b.ReportMetric(r.Throughput, "msgs/s")
			b.ReportMetric(float64(r.Data.P50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(r.Data.P99.Microseconds())/1000, "p99-ms")
		})
	}
}

func startProfile(b *testing.B) (stop func()) {
	if *cpuProfile == "" {
		return func() {}
	}
	f, err := os.Create(*cpuProfile)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}
