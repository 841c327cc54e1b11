package relay_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
)

// BenchmarkSubmission measures the whole daemon on the hot path: STARTTLS +
// AUTH once per connection, then DATA → scan → split → verify → extract →
// durable filing → 250, over loopback, with b.RunParallel's goroutines each
// holding one connection (GOMAXPROCS × -cpu… × SetParallelism clients).
// Messages are signed before the timer starts.
func BenchmarkSubmission(b *testing.B) {
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := newHarness(b)
			kp, err := h.info.Signer()
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([][]byte, b.N)
			now := time.Now()
			for i := range msgs {
				rx := demo.SamplePrescription(now)
				msgs[i], err = demo.Compose(kp, h.info.Prescriber.Address, h.info.Pharmacy.Address, "Ordonnance", rx.Content(), now)
				if err != nil {
					b.Fatal(err)
				}
			}
			opts, err := h.info.SubmitOptions()
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism((clients + 1) / 2) // GOMAXPROCS is 2 here
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				c, err := submit.Dial(opts)
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				for pb.Next() {
					i := next.Add(1) - 1
					if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msgs[i]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
