package loadgen

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

const exposition = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 3456
go_memstats_heap_alloc_bytes 4.2e+07
go_memstats_heap_inuse_bytes 5.0331648e+07
go_memstats_sys_bytes 9.8765e+07
go_gc_duration_seconds{quantile="0.5"} 0.0001
mssrelay_imap_sessions 1000
mssrelay_smtp_sessions 100
mssrelay_smtp_messages_total{outcome="accepted",reason=""} 12
process_resident_memory_bytes 1.34217728e+08
`

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 128<<20 || m.HeapInuse != 50331648 || m.HeapAlloc != 42e6 || m.GoSys != 98765e3 || m.Goroutines != 3456 {
		t.Errorf("parsed %+v", m)
	}
	if m.ServerIMAPSessions == nil || *m.ServerIMAPSessions != 1000 || m.ServerSMTPSessions == nil || *m.ServerSMTPSessions != 100 {
		t.Errorf("server sessions %v, %v; want 1000 and 100", m.ServerIMAPSessions, m.ServerSMTPSessions)
	}
}

func TestParseMetricsRefused(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"no RSS", "go_goroutines 12\n"},
		{"RSS only labelled", `process_resident_memory_bytes{x="y"} 12` + "\n"},
		{"NaN", "process_resident_memory_bytes NaN\n"},
		{"negative", "process_resident_memory_bytes -1\n"},
		{"infinite", "process_resident_memory_bytes +Inf\n"},
		{"huge", "process_resident_memory_bytes 1e300\n"},
		{"not a number", "process_resident_memory_bytes lots\n"},
		{"bad count", "process_resident_memory_bytes 1\nmssrelay_imap_sessions x\n"},
	}
	for _, tt := range tests {
		if m, err := parseMetrics(strings.NewReader(tt.in)); err == nil {
			t.Errorf("%s: parsed %+v, want an error", tt.name, m)
		}
	}
}

// Without the relay's gauges (another Go program's /metrics) the session
// counts are absent, not zero.
func TestParseMetricsWithoutSessions(t *testing.T) {
	m, err := parseMetrics(strings.NewReader("process_resident_memory_bytes 1024\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 1024 || m.ServerIMAPSessions != nil || m.ServerSMTPSessions != nil {
		t.Errorf("parsed %+v, want RSS 1024 and no session counts", m)
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(exposition)
	f.Add("process_resident_memory_bytes 1e3 1700000000000\n")
	f.Fuzz(func(t *testing.T, in string) {
		m, err := parseMetrics(strings.NewReader(in))
		if err != nil {
			return
		}
		if m.RSS < 0 || m.HeapInuse < 0 || m.HeapAlloc < 0 || m.GoSys < 0 || m.Goroutines < 0 {
			t.Errorf("negative figure from %q: %+v", in, m)
		}
	})
}

func TestParseProcStatus(t *testing.T) {
	const status = "Name:\tmssrelay\nVmPeak:\t 1300000 kB\nVmHWM:\t  150000 kB\nVmRSS:\t  123456 kB\n" +
		"RssAnon:\t   23456 kB\nRssFile:\t  100000 kB\nRssShmem:\t       0 kB\nThreads:\t9\n"
	m, err := parseProcStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 123456<<10 || m.PeakRSS != 150000<<10 || m.AnonRSS != 23456<<10 || m.FileRSS != 100000<<10 {
		t.Errorf("parsed %+v", m)
	}
	refused := []struct{ name, in string }{
		{"no VmRSS (kernel thread)", "Name:\tkthreadd\nThreads:\t1\n"},
		{"unit", "VmRSS:\t 12 MB\n"},
		{"not a number", "VmRSS:\t x kB\n"},
		{"negative", "VmRSS:\t -4 kB\n"},
		{"overflow", "VmRSS:\t 99999999999999999 kB\n"},
		{"zero", "VmRSS:\t 0 kB\n"},
	}
	for _, tt := range refused {
		if m, err := parseProcStatus(strings.NewReader(tt.in)); err == nil {
			t.Errorf("%s: parsed %+v, want an error", tt.name, m)
		}
	}
}

func TestProcMemorySelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/<pid>/status is Linux")
	}
	m, err := ProcMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.PeakRSS < m.RSS {
		t.Errorf("own memory: RSS %d, peak %d", m.RSS, m.PeakRSS)
	}
}

func TestMemoryMerge(t *testing.T) {
	n := 7
	admin := &Memory{Source: "admin", RSS: 100, HeapInuse: 40, Goroutines: 9, ServerIMAPSessions: &n}
	admin.Merge(&Memory{Source: "proc", RSS: 104, PeakRSS: 200})
	if admin.RSS != 100 || admin.PeakRSS != 200 || admin.HeapInuse != 40 || admin.Source != "admin + proc" ||
		admin.ServerIMAPSessions != &n {
		t.Errorf("merged %+v", admin)
	}
}
