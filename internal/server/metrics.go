package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
)

// metrics are the server's Prometheus series. They are always kept; the
// /metrics endpoint exists only when METRICS_ADDRESS is set.
type metrics struct {
	reg         *prometheus.Registry
	jobDuration *prometheus.HistogramVec
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
}

// Series names, documented in the README.
const (
	metricJobs        = "recon_jobs"
	metricQueueDepth  = "recon_queue_depth"
	metricWorkers     = "recon_workers"
	metricWorkersBusy = "recon_workers_busy"
	metricPaused      = "recon_workers_paused"
	metricJobDuration = "recon_job_duration_seconds"
	metricBytesIn     = "recon_received_bytes_total"
	metricBytesOut    = "recon_sent_bytes_total"
)

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricJobDuration,
			Help:    "Run time of jobs' scripts, by final state.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 12), // 0.1 s to about 6 h
		}, []string{"state"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricBytesIn, Help: "Bytes of input files received and stored.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricBytesOut, Help: "Bytes of result files delivered.",
		}),
	}
	m.reg.MustRegister(m.jobDuration, m.bytesIn, m.bytesOut, &stateCollector{s: s},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// stateCollector reads jobs by state, queue depth and workers at scrape.
type stateCollector struct{ s *Server }

var (
	descJobs        = prometheus.NewDesc(metricJobs, "Jobs in the store, by state.", []string{"state"}, nil)
	descQueueDepth  = prometheus.NewDesc(metricQueueDepth, "Jobs waiting in the queue.", nil, nil)
	descWorkers     = prometheus.NewDesc(metricWorkers, "Workers the pool aims for (MAX_CONCURRENT_JOBS or setmaxjobs).", nil, nil)
	descWorkersBusy = prometheus.NewDesc(metricWorkersBusy, "Workers running a job.", nil, nil)
	descPaused      = prometheus.NewDesc(metricPaused, "1 while the resource gate holds new jobs back.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descQueueDepth, descWorkers, descWorkersBusy, descPaused} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := c.s.store.Counts(ctx); err == nil {
		for _, st := range jobs.States() {
			ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
		ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(counts[jobs.Queued]))
	}
	snap := c.s.pool.snapshot()
	busy := 0
	for _, w := range snap.Workers {
		if w.State == workerBusy || (w.State == workerStopping && w.JobID != "") {
			busy++
		}
	}
	paused := 0.0
	if snap.Paused {
		paused = 1
	}
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(snap.MaxJobs))
	ch <- prometheus.MustNewConstMetric(descWorkersBusy, prometheus.GaugeValue, float64(busy))
	ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, paused)
}

// startMetrics opens the listener of /metrics on METRICS_ADDRESS (a bare
// :PORT means loopback), for serveMetrics. The endpoint has no key: the
// config accepts loopback addresses only, and a listener that is not on
// loopback all the same (localhost resolving elsewhere) is refused.
func (s *Server) startMetrics(ctx context.Context) (net.Listener, *http.Server, error) {
	addr := s.cfg.MetricsAddress
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	if !config.IsLoopbackHost(host) {
		return nil, nil, errors.New("the metrics endpoint has no key: it must be on loopback")
	}
	if host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := s.life.Listen("metrics", addr)
	if err != nil {
		return nil, nil, err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		ln.Close()
		return nil, nil, fmt.Errorf("the metrics endpoint has no key: it must be on loopback, not %s", ln.Addr())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: nil}))
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	return ln, hs, nil
}

// metricsShutdownTimeout is how long a scrape in progress may take to end
// at shutdown.
const metricsShutdownTimeout = 5 * time.Second

// serveMetrics serves the metrics endpoint on ln until ctx ends, then
// shuts it down; it returns when both are done.
func (s *Server) serveMetrics(ctx context.Context, hs *http.Server, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		hs.Shutdown(sctx)
	})
	// The lifecycle closes ln when shutdown begins, before ctx ends.
	err := hs.Serve(ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		s.log.Error("metrics endpoint stopped", "err", err)
	}
}
