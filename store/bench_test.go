package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFile files 10 KiB messages from 1, 8 and 64 concurrent clients
// and reports throughput and commits per message (each bbolt commit is two
// fdatasyncs). Group commit should keep one commit per message for a lone
// client and share commits as clients are added.
func BenchmarkFile(b *testing.B) {
	body := make([]byte, 10<<10)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	accounts := make([]string, 16)
	for i := range accounts {
		accounts[i] = fmt.Sprintf("pharmacie%02d@example.org", i)
	}
	for _, clients := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s, _ := openTemp(b)
			for _, a := range accounts {
				if err := s.EnsureAccount(a); err != nil {
					b.Fatal(err)
				}
			}
			before := s.Stats()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					raw := make([]byte, len(body)+64)
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						n := copy(raw, fmt.Sprintf("X-N: %020d\r\n\r\n", i))
						copy(raw[n:], body)
						f := &Filing{
							Raw: raw[:n+len(body)], Received: time.Now(), Sender: "dr@example.org",
							Recipients: []string{accounts[i%int64(len(accounts))]},
							Number:     fmt.Sprintf("RX%012d", i), Digest: sha256.Sum256(raw[:n+len(body)]),
							MessageID: fmt.Sprintf("<%d@example.org>", i), Signer: "dr@example.org",
							IDNPS: "810101201234", PatientINS: "180017512345610",
						}
						if _, err := s.File(context.Background(), f); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			st := s.Stats()
			filed := st.Filings - before.Filings
			if filed != uint64(b.N) {
				b.Fatalf("filed %d of %d", filed, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(st.Commits-before.Commits)/float64(b.N), "commits/msg")
		})
	}
}

// BenchmarkEntries reads a 1,000-message mailbox, as SELECT does.
func BenchmarkEntries(b *testing.B) {
	s, _ := openTemp(b)
	for i := range 1000 {
		mustFile(b, s, testFiling(i, acct))
	}
	b.ResetTimer()
	for b.Loop() {
		if _, e, err := s.Entries(acct, Inbox); err != nil || len(e) != 1000 {
			b.Fatal(len(e), err)
		}
	}
}
