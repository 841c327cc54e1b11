package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Memory is one reading of the relay's memory, from its admin /metrics
// endpoint (Prometheus' process and Go collectors, which the relay
// registers), from /proc/<pid>/status, or both merged.
type Memory struct {
	// Source says where the figures come from, e.g.
	// "http://127.0.0.1:9187/metrics" or "/proc/1234/status".
	Source string `json:"source"`
	// RSS is the resident set size (process_resident_memory_bytes, or
	// VmRSS): what the target is about.
	RSS int64 `json:"rss_bytes"`
	// PeakRSS is the high-water mark of RSS since the process started
	// (VmHWM); only /proc gives it.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
	// AnonRSS and FileRSS split RSS (RssAnon, RssFile; /proc only):
	// anonymous memory is the Go heap, stacks and runtime; file-backed
	// pages are mostly the store's bbolt file, which bbolt maps read-only
	// and the kernel can reclaim (they count in RSS once touched).
	AnonRSS int64 `json:"anon_rss_bytes,omitempty"`
	FileRSS int64 `json:"file_rss_bytes,omitempty"`
	// The Go runtime's view, from the admin endpoint only: heap in use
	// (spans holding objects, live or not yet swept), live heap objects,
	// and everything the runtime obtained from the OS.
	HeapInuse  int64 `json:"go_heap_inuse_bytes,omitempty"`
	HeapAlloc  int64 `json:"go_heap_alloc_bytes,omitempty"`
	GoSys      int64 `json:"go_sys_bytes,omitempty"`
	Goroutines int   `json:"goroutines,omitempty"`
	// The relay's own gauges (mssrelay_imap_sessions and
	// mssrelay_smtp_sessions): connections the server holds, whether
	// logged in or not. nil when the source has no such gauge.
	ServerIMAPSessions *int `json:"server_imap_sessions,omitempty"`
	ServerSMTPSessions *int `json:"server_smtp_sessions,omitempty"`
}

// Merge fills what m lacks from o (the admin endpoint has the heap, /proc
// the peak); m's own figures win.
func (m *Memory) Merge(o *Memory) {
	if o == nil {
		return
	}
	m.Source += " + " + o.Source
	fill := func(dst *int64, src int64) {
		if *dst == 0 {
			*dst = src
		}
	}
	fill(&m.RSS, o.RSS)
	fill(&m.PeakRSS, o.PeakRSS)
	fill(&m.AnonRSS, o.AnonRSS)
	fill(&m.FileRSS, o.FileRSS)
	fill(&m.HeapInuse, o.HeapInuse)
	fill(&m.HeapAlloc, o.HeapAlloc)
	fill(&m.GoSys, o.GoSys)
	if m.Goroutines == 0 {
		m.Goroutines = o.Goroutines
	}
	if m.ServerIMAPSessions == nil {
		m.ServerIMAPSessions = o.ServerIMAPSessions
	}
	if m.ServerSMTPSessions == nil {
		m.ServerSMTPSessions = o.ServerSMTPSessions
	}
}

// maxMetricsBytes bounds what ScrapeMemory reads: the relay's exposition is
// a few tens of KiB.
const maxMetricsBytes = 4 << 20

// ScrapeMemory reads the memory figures from a Prometheus text exposition
// at url (the relay's admin /metrics). hc nil uses http.DefaultClient; ctx
// bounds the request.
func ScrapeMemory(ctx context.Context, hc *http.Client, url string) (*Memory, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics request: %w", err)
	}
	// The text format, not protobuf: parseMetrics reads lines.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading %s: %s", url, resp.Status)
	}
	m, err := parseMetrics(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	m.Source = url
	return m, nil
}

// parseMetrics picks the memory figures out of a Prometheus text
// exposition (https://prometheus.io/docs/instrumenting/exposition_formats/):
// lines "name value" or "name{labels} value [timestamp]", comments with
// '#'. Only unlabelled samples of the names below are read; everything else
// is skipped. It fails when the exposition has no resident memory.
func parseMetrics(r io.Reader) (*Memory, error) {
	m := &Memory{}
	var imapSessions, smtpSessions int
	bytesDst := map[string]*int64{
		"process_resident_memory_bytes": &m.RSS,
		"go_memstats_heap_inuse_bytes":  &m.HeapInuse,
		"go_memstats_heap_alloc_bytes":  &m.HeapAlloc,
		"go_memstats_sys_bytes":         &m.GoSys,
	}
	countDst := map[string]*int{
		"go_goroutines":          &m.Goroutines,
		"mssrelay_imap_sessions": &imapSessions,
		"mssrelay_smtp_sessions": &smtpSessions,
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name := fields[0]
		bd, isBytes := bytesDst[name]
		cd, isCount := countDst[name]
		if !isBytes && !isCount {
			continue // other metrics, and labelled samples ("name{...}")
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > math.MaxInt64/2 {
			return nil, fmt.Errorf("metric %s: bad value %q", name, fields[1])
		}
		seen[name] = true
		if isBytes {
			*bd = int64(v)
		} else {
			*cd = int(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics exposition: %w", err)
	}
	if !seen["process_resident_memory_bytes"] {
		return nil, errors.New("no process_resident_memory_bytes in the metrics (the process collector is not registered, or the OS is not Linux)")
	}
	if seen["mssrelay_imap_sessions"] {
		m.ServerIMAPSessions = &imapSessions
	}
	if seen["mssrelay_smtp_sessions"] {
		m.ServerSMTPSessions = &smtpSessions
	}
	return m, nil
}

// ProcMemory reads VmRSS, VmHWM, RssAnon and RssFile of process pid from
// /proc (Linux).
func ProcMemory(pid int) (*Memory, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the relay's memory: %w", err)
	}
	defer f.Close()
	m, err := parseProcStatus(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Source = path
	return m, nil
}

// parseProcStatus reads the "VmRSS:  123 kB", "VmHWM:", "RssAnon:" and
// "RssFile:" lines of a /proc/<pid>/status file (proc(5)); the unit is
// always kB (KiB).
func parseProcStatus(r io.Reader) (*Memory, error) {
	m := &Memory{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.PeakRSS
		case "RssAnon":
			dst = &m.AnonRSS
		case "RssFile":
			dst = &m.FileRSS
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return nil, fmt.Errorf("%s: unexpected %q", key, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > math.MaxInt64>>10 {
			return nil, fmt.Errorf("%s: bad size %q", key, f[0])
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if m.RSS == 0 {
		// Kernel threads and zombies have no VmRSS line.
		return nil, errors.New("no VmRSS (not a running user process?)")
	}
	return m, nil
}
