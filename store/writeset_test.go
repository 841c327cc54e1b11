package store

// Write-set instrumentation: which B+tree pages one File dirties.
//
// bbolt writes every node it materialised in a write transaction to a new
// page at commit (copy-on-write), one pwrite per node, then the meta page:
// the cost of a lone client's commit is mostly the number of nodes it
// dirties, and each modified nested bucket also dirties the path to it in
// its parent. pageWalk reads the file's B+trees directly (the page format
// of go.etcd.io/bbolt/internal/common) and lists each bucket's pages, so
// that comparing two walks names the pages a commit rewrote, per bucket.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// bbolt's on-disk page format (internal/common/page.go, meta.go).
const (
	pgHeaderSize    = 16
	pgBranchFlag    = 0x01
	pgLeafFlag      = 0x02
	pgElemSize      = 16
	pgBucketLeaf    = 0x01
	pgInBucketSize  = 16
	pgMetaRootOff   = pgHeaderSize + 16 // magic, version, page size, flags
	pgMetaTxidOff   = pgMetaRootOff + pgInBucketSize + 16
	pgMetaPageCount = 2
)

// walkNode is one node (a page and its overflow pages) of a bucket.
type walkNode struct {
	bucket string
	pages  int // 1 + overflow
	leaf   bool
}

// pageWalk maps each page id that starts a node to its node.
type pageWalk map[uint64]walkNode

type walker struct {
	f        *os.File
	pageSize int
	out      pageWalk
}

// walkFile reads the B+trees of the database file at path as of its
// latest meta page.
func walkFile(t testing.TB, path string, pageSize int) pageWalk {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	w := &walker{f: f, pageSize: pageSize, out: pageWalk{}}
	var root uint64
	var txid uint64
	for i := range pgMetaPageCount {
		p := w.read(t, uint64(i), 1)
		if id := binary.LittleEndian.Uint64(p[pgMetaTxidOff:]); id >= txid {
			txid = id
			root = binary.LittleEndian.Uint64(p[pgMetaRootOff:])
		}
	}
	w.node(t, "", root)
	return w.out
}

func (w *walker) read(t testing.TB, id uint64, n int) []byte {
	b := make([]byte, n*w.pageSize)
	if _, err := w.f.ReadAt(b, int64(id)*int64(w.pageSize)); err != nil {
		t.Fatalf("read page %d: %v", id, err)
	}
	return b
}

// node records the node at page id of bucket name and walks below it.
func (w *walker) node(t testing.TB, name string, id uint64) {
	p := w.read(t, id, 1)
	flags := binary.LittleEndian.Uint16(p[8:])
	count := int(binary.LittleEndian.Uint16(p[10:]))
	overflow := int(binary.LittleEndian.Uint32(p[12:]))
	if overflow > 0 && (flags&pgBranchFlag != 0 || pgHeaderSize+count*pgElemSize > len(p)) {
		p = w.read(t, id, 1+overflow)
	}
	w.out[id] = walkNode{bucket: name, pages: 1 + overflow, leaf: flags&pgLeafFlag != 0}
	for i := range count {
		e := pgHeaderSize + i*pgElemSize
		if flags&pgBranchFlag != 0 {
			w.node(t, name, binary.LittleEndian.Uint64(p[e+8:]))
			continue
		}
		if binary.LittleEndian.Uint32(p[e:])&pgBucketLeaf == 0 {
			continue
		}
		pos := e + int(binary.LittleEndian.Uint32(p[e+4:]))
		ksize := int(binary.LittleEndian.Uint32(p[e+8:]))
		if pos+ksize+pgInBucketSize > len(p) {
			p = w.read(t, id, 1+overflow)
		}
		key := p[pos : pos+ksize]
		child := binary.LittleEndian.Uint64(p[pos+ksize:])
		if child == 0 {
			continue // inline bucket: lives in this leaf
		}
		w.node(t, childName(name, key), child)
	}
}

// childName names nested buckets generically (one account or mailbox
// stands for all).
func childName(parent string, key []byte) string {
	switch {
	case parent == "accounts":
		return "accounts/<acct>"
	case strings.HasSuffix(parent, "/boxes"):
		return parent + "/<box>"
	case parent == "":
		return string(key)
	}
	return parent + "/" + string(key)
}

// dirtied returns, per bucket, the nodes and pages present in after but
// not in before: what one commit wrote (a live page is never reused).
func dirtied(before, after pageWalk) (nodes, pages map[string]int) {
	nodes, pages = map[string]int{}, map[string]int{}
	for id, n := range after {
		if old, ok := before[id]; ok && old.bucket == n.bucket {
			continue
		}
		b := n.bucket
		if b == "" {
			b = "(root)"
		}
		nodes[b]++
		pages[b] += n.pages
	}
	return nodes, pages
}

// writesetFiling is a 10 KiB prescription to one of 16 pharmacies; with
// relay set it also carries what the relay adds (a 1 KiB IMAP cache and
// the acceptance's audit event).
func writesetFiling(i int, relay bool) *Filing {
	body := make([]byte, 10<<10)
	for j := range body {
		body[j] = 'a' + byte((i+j)%26)
	}
	raw := append(fmt.Appendf(nil, "X-N: %020d\r\n\r\n", i), body...)
	f := &Filing{
		Raw: raw, Received: time.Now(), Sender: "dr@example.org",
		Recipients: []string{fmt.Sprintf("pharmacie%02d@example.org", i%16)},
		// A realistic prescription number is not sequential: spread it.
		Number: fmt.Sprintf("RX%016x", uint64(i)*0x9E3779B97F4A7C15), Digest: sha256.Sum256(raw),
		MessageID: fmt.Sprintf("<%d@example.org>", i), Signer: "dr@example.org",
		IDNPS: "810101201234", PatientINS: fmt.Sprintf("1800175%08d", (i*7919)%5000),
	}
	if relay {
		f.Meta = make([]byte, 1<<10)
		f.Audit = []AuditEvent{{Kind: AuditSMTPAccept, Actor: f.Sender, Remote: "192.0.2.1:4242",
			Subject: "rx=" + f.Number + " size=10240 to=" + f.Recipients[0] + " jobs=0", Outcome: "250"}}
	}
	return f
}

// prefill files n messages from 8 clients (group commit), numbered from 0.
func prefill(t testing.TB, s *Store, n int, relay bool) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Bool
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || failed.Load() {
					return
				}
				if _, err := s.File(context.Background(), writesetFiling(int(i), relay)); err != nil {
					t.Error(err)
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
}

// TestWriteSet files messages one at a time into a store already holding
// some and checks the page walk against bbolt's own count of pwrites; with
// MSS_WRITESET=N (e.g. 10000) it prefills N messages and logs the per-bucket
// write set and the file's size per message (the analysis behind the
// FillPercent settings).
func TestWriteSet(t *testing.T) {
	n := 300
	if v := os.Getenv("MSS_WRITESET"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("MSS_WRITESET=%q: %v", v, err)
		}
	} else if testing.Short() {
		t.Skip("prefills a store")
	}
	for _, relay := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay=%v", relay), func(t *testing.T) {
			s, path := openTemp(t)
			prefill(t, s, n, relay)
			pageSize := s.db.Info().PageSize

			const measured = 20
			sumNodes, sumPages := map[string]int{}, map[string]int{}
			var sumTx bbolt.TxStats
			before := walkFile(t, path, pageSize)
			for i := range measured {
				st0 := s.db.Stats()
				mustFile(t, s, writesetFiling(n+i, relay))
				st1 := s.db.Stats()
				after := walkFile(t, path, pageSize)
				nodes, pages := dirtied(before, after)
				before = after
				d := st1.Sub(&st0).TxStats
				total := 0
				for b, c := range nodes {
					sumNodes[b] += c
					sumPages[b] += pages[b]
					total += c
				}
				// One pwrite per new node plus the meta page: if the
				// walk missed a bucket, the counts differ.
				if got := d.GetWrite(); got != int64(total+1) {
					t.Errorf("filing %d: bbolt wrote %d pages, walk found %d new nodes (+1 meta)", i, got, total)
				}
				sumTx.IncPageCount(d.GetPageCount())
				sumTx.IncPageAlloc(d.GetPageAlloc())
				sumTx.IncWrite(d.GetWrite())
				sumTx.IncSplit(d.GetSplit())
				sumTx.IncSpill(d.GetSpill())
				sumTx.IncSpillTime(d.GetSpillTime())
				sumTx.IncWriteTime(d.GetWriteTime())
				sumTx.IncNodeCount(d.GetNodeCount())
			}

			var names []string
			for b := range sumNodes {
				names = append(names, b)
			}
			sort.Strings(names)
			var lines []string
			for _, b := range names {
				lines = append(lines, fmt.Sprintf("  %-34s %5.2f nodes %5.2f pages", b,
					float64(sumNodes[b])/measured, float64(sumPages[b])/measured))
			}
			t.Logf("store of %d messages, per lone commit (mean of %d):\n%s", n, measured, strings.Join(lines, "\n"))
			t.Logf("bbolt: %.1f pwrite, %.1f pages allocated (%.1f KiB), %.1f splits, %.1f nodes materialised, spill %v, write+sync %v",
				float64(sumTx.GetWrite())/measured, float64(sumTx.GetPageCount())/measured,
				float64(sumTx.GetPageAlloc())/measured/1024, float64(sumTx.GetSplit())/measured,
				float64(sumTx.GetNodeCount())/measured,
				sumTx.GetSpillTime()/measured, sumTx.GetWriteTime()/measured)

			// Space: the file against the raw bytes it holds.
			var raw, highWater int64
			var bstats []string
			err := s.db.View(func(tx *bbolt.Tx) error {
				highWater = tx.Size()
				return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
					bs := b.Stats()
					if string(name) == "raw" {
						_ = b.ForEach(func(_, v []byte) error { raw += int64(len(v)); return nil })
					}
					fill := 0.0
					if bs.LeafAlloc > 0 {
						fill = float64(bs.LeafInuse) / float64(bs.LeafAlloc)
					}
					bstats = append(bstats, fmt.Sprintf("  %-12s depth %d, %6d leaf + %4d overflow + %4d branch pages, leaf fill %3.0f%%, %7.1f KiB",
						name, bs.Depth, bs.LeafPageN, bs.LeafOverflowN, bs.BranchPageN, 100*fill,
						float64(bs.LeafAlloc+bs.BranchAlloc)/1024))
					// Append-only buckets fill their pages (appendOnly);
					// bbolt's default split leaves them about half full.
					if (string(name) == "records" || string(name) == "audit") && n >= 200 && bs.LeafPageN > 0 && fill < 0.8 {
						t.Errorf("%s leaves %.0f%% full: FillPercent not applied to an append-only bucket", name, 100*fill)
					}
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			dbs := s.db.Stats()
			msgs := n + measured
			// The file grows in steps of bbolt's AllocSize (16 MiB), so
			// its size moves in steps; the high-water mark (last page in
			// use) is what the data takes.
			t.Logf("file %.1f MiB for %d messages: %.2f KiB/msg, %.3f× the raw bytes; high-water mark %.1f MiB, %.3f×; %d free + %d pending pages\n%s",
				float64(fi.Size())/(1<<20), msgs, float64(fi.Size())/float64(msgs)/1024, float64(fi.Size())/float64(raw),
				float64(highWater)/(1<<20), float64(highWater)/float64(raw),
				dbs.FreePageN, dbs.PendingPageN, strings.Join(bstats, "\n"))
		})
	}
}

// BenchmarkFileLargeStore files 10 KiB messages into a store already
// holding 10,000 (filed once, shared by the sub-benchmarks), from 1 and 32
// clients: the cost of a commit grows with the depth of the trees it
// rewrites. file/raw is the database file's size over the raw bytes held
// (issue 8: at most 1.3).
func BenchmarkFileLargeStore(b *testing.B) {
	const base = 10000
	s, path := openTemp(b)
	prefill(b, s, base, false)
	var next atomic.Int64
	next.Store(base)
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			before := s.Stats()
			var done atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(10 << 10)
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Go(func() {
					for done.Add(1) <= int64(b.N) {
						if _, err := s.File(context.Background(), writesetFiling(int(next.Add(1)-1), false)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			st := s.Stats()
			if filed := st.Filings - before.Filings; filed != uint64(b.N) {
				b.Fatalf("filed %d of %d", filed, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(st.Commits-before.Commits)/float64(b.N), "commits/msg")
			fi, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			held := next.Load()
			b.ReportMetric(float64(fi.Size())/float64(held*(10<<10+26)), "file/raw")
		})
	}
}
