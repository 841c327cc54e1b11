package smtp

// mssrelay patch tests: the DATA reader with its mid-line fast path must
// behave exactly as the byte-wise reader of v0.25.1, kept below as the
// reference, whatever the input, the way the network splits it and the
// sizes the caller reads with.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// refDataReader is dataReader.Read of go-smtp v0.25.1, unchanged.
type refDataReader struct {
	r       *bufio.Reader
	state   int
	limited bool
	n       int64
}

func (r *refDataReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	if r.limited {
		r.n -= int64(n)
	}
	return
}

// chunkReader hands out its data in the chunk sizes of a pattern, as a
// network delivers a stream in segments.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
	// err, when set, ends the stream instead of io.EOF and comes with
	// the last bytes, as a connection reset or a deadline may.
	err error
}

func (c *chunkReader) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	size := 1
	if len(c.sizes) > 0 {
		size = int(c.sizes[c.i%len(c.sizes)])%97 + 1
		c.i++
	}
	if size > len(b) {
		size = len(b)
	}
	if size > len(c.data) {
		size = len(c.data)
	}
	n := copy(b, c.data[:size])
	c.data = c.data[n:]
	if len(c.data) == 0 && c.err != nil {
		return n, c.err
	}
	return n, nil
}

type readStep struct {
	n   int
	err error
	// pulled is how many bytes the bufio.Reader had taken from the
	// connection when the call returned: reading further ahead than the
	// byte-wise reader could block on a client that waits for a reply
	// (a real connection blocks where chunkReader does not).
	pulled int
}

// pullCounter counts the bytes taken from the connection.
type pullCounter struct {
	r io.Reader
	n int
}

func (p *pullCounter) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += n
	return n, err
}

// drain reads r with buffers of the sizes in pattern until an error,
// returning every call's result, the bytes read and what is left unread.
func drain(t *testing.T, read func([]byte) (int, error), rest *bufio.Reader, pulled *pullCounter, pattern []byte) ([]readStep, []byte, []byte) {
	t.Helper()
	var steps []readStep
	var out bytes.Buffer
	for i := 0; ; i++ {
		size := 4096
		if len(pattern) > 0 {
			size = int(pattern[i%len(pattern)])*3 + 1
		}
		buf := make([]byte, size)
		n, err := read(buf)
		out.Write(buf[:n])
		steps = append(steps, readStep{n, err, pulled.n})
		if err != nil {
			break
		}
		if i > 1<<20 {
			t.Fatal("reader makes no progress")
		}
	}
	left, _ := io.ReadAll(rest)
	return steps, out.Bytes(), left
}

func checkSameAsReference(t *testing.T, input, netSizes, readSizes []byte, limit int64) {
	t.Helper()
	checkSameAsReferenceVia(t, func(r io.Reader) io.Reader { return r }, input, netSizes, readSizes, limit)
}

// checkSameAsReferenceVia is checkSameAsReference with the connection
// seen through wrap, as go-smtp sees it through lineLimitReader.
func checkSameAsReferenceVia(t *testing.T, wrap func(io.Reader) io.Reader, input, netSizes, readSizes []byte, limit int64) {
	t.Helper()
	refPulled := &pullCounter{r: wrap(&chunkReader{data: input, sizes: netSizes})}
	refBuf := bufio.NewReaderSize(refPulled, 64)
	ref := &refDataReader{r: refBuf, limited: limit > 0, n: limit}
	newPulled := &pullCounter{r: wrap(&chunkReader{data: input, sizes: netSizes})}
	newBuf := bufio.NewReaderSize(newPulled, 64)
	got := &dataReader{r: newBuf, limited: limit > 0, n: limit}

	refSteps, refOut, refLeft := drain(t, ref.Read, refBuf, refPulled, readSizes)
	gotSteps, gotOut, gotLeft := drain(t, got.Read, newBuf, newPulled, readSizes)

	if !bytes.Equal(gotOut, refOut) {
		t.Fatalf("content differs:\n got %q\nwant %q", gotOut, refOut)
	}
	if !bytes.Equal(gotLeft, refLeft) {
		t.Fatalf("bytes left after the data differ:\n got %q\nwant %q", gotLeft, refLeft)
	}
	if len(gotSteps) != len(refSteps) {
		t.Fatalf("%d Read calls, reference %d", len(gotSteps), len(refSteps))
	}
	for i := range refSteps {
		if gotSteps[i] != refSteps[i] {
			g, w := gotSteps[i], refSteps[i]
			t.Fatalf("Read call %d returned (%d, %v) with %d bytes taken from the connection, reference (%d, %v) with %d",
				i, g.n, g.err, g.pulled, w.n, w.err, w.pulled)
		}
	}
	if got.state != ref.state || got.n != ref.n {
		t.Fatalf("final state %d/%d, reference %d/%d", got.state, got.n, ref.state, ref.n)
	}
}

var dataReaderSeeds = []string{
	"Subject: x\r\n\r\nbody\r\n.\r\n",
	"..leading dot\r\n.\r\nMAIL FROM:<next@example.org>\r\n",
	"line\r\n..\r\n...\r\n.\r\nQUIT\r\n",
	"bare\nLF\n.\nnot the end\r\n.\r\n",
	"bare\rCR\r.\r\r\n.\r\n",
	"\r\n.\r\n",
	".\r\n",
	"no end marker\r\n",
	"\r\r\n\r\n..\r\r\n.\r",
	"a line that is longer than the bufio buffer of sixty-four bytes used by the test, twice over\r\n.\r\nRSET\r\n",
}

func TestDataReaderSameAsReference(t *testing.T) {
	for _, seed := range dataReaderSeeds {
		for _, limit := range []int64{0, 1, 5, 20, 1 << 20} {
			for _, net := range [][]byte{nil, {0}, {2, 60, 7}, {96}} {
				for _, reads := range [][]byte{nil, {0}, {1, 5}, {30}} {
					checkSameAsReference(t, []byte(seed), net, reads, limit)
				}
			}
		}
	}
}

// The reader as Conn builds it: below the bufio.Reader, lineLimitReader
// (MaxLineLength), which fails a read that completes a too-long line and
// every read after it, and a connection that ends in an error arriving
// with the last bytes. Both readers must see the same errors at the same
// calls and leave the same bytes unread.
func TestDataReaderSameAsReferenceLineLimitAndErrors(t *testing.T) {
	errReset := errors.New("connection reset")
	for _, seed := range dataReaderSeeds {
		for _, lineLimit := range []int{0, 3, 12, 40} {
			for _, end := range []error{nil, errReset} {
				for _, net := range [][]byte{nil, {2, 60, 7}, {96}} {
					for _, reads := range [][]byte{nil, {0}, {1, 5}} {
						for _, limit := range []int64{0, 5} {
							wrap := func(r io.Reader) io.Reader {
								r.(*chunkReader).err = end
								return &lineLimitReader{R: r, LineLimit: lineLimit}
							}
							checkSameAsReferenceVia(t, wrap, []byte(seed), net, reads, limit)
						}
					}
				}
			}
		}
	}
}

func FuzzDataReader(f *testing.F) {
	for i, seed := range dataReaderSeeds {
		f.Add([]byte(seed), []byte{byte(i), 3}, []byte{byte(i * 7)}, uint16(i*3))
	}
	f.Fuzz(func(t *testing.T, input, netSizes, readSizes []byte, limit uint16) {
		checkSameAsReference(t, input, netSizes, readSizes, int64(limit))
	})
}
