package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/pacs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
)

// The routes to the PACS; each configured one is a destination of its own.
const (
	routeDICOMweb = "dicomweb"
	routeDIMSE    = "dimse"
)

// Retry timing of a PACS delivery.
const (
	pacsFirstRetry = 2 * time.Second
	pacsMaxRetry   = 10 * time.Minute
	// pacsIdleCheck bounds the sleep of the delivery loop between looks
	// at the store.
	pacsIdleCheck = time.Minute
	// maxPasswordBytes bounds PACS_PASSWORD_FILE.
	maxPasswordBytes = 4096
	// maxPACSErrorBytes bounds an error recorded for an instance or a
	// delivery (what the PACS or storescu said may be long).
	maxPACSErrorBytes = 1024
)

// clip shortens an error message to maxPACSErrorBytes.
func clip(s string) string {
	if len(s) <= maxPACSErrorBytes {
		return s
	}
	return strings.ToValidUTF8(s[:maxPACSErrorBytes], "") + "..."
}

// deliverer sends the DICOM results of succeeded jobs to the PACS and
// records each instance's outcome in the store, one delivery at a time. It
// is the server's "pacs delivery" goroutine (run); finish wakes it.
type deliverer struct {
	cfg     config.PACS
	outBase string
	store   *jobs.Store
	log     *slog.Logger
	wake    chan struct{}
	// ended is called when a delivery has ended, to remove results the
	// client already has.
	ended func(ctx context.Context, id string)
	// changed wakes the clients waiting for the job.
	changed func(id string)
}

func newDeliverer(cfg *config.Server, store *jobs.Store, log *slog.Logger) *deliverer {
	return &deliverer{cfg: cfg.PACS, outBase: cfg.OutputBaseDir, store: store, log: log, wake: make(chan struct{}, 1)}
}

func (d *deliverer) enabled() bool { return d != nil && d.cfg.Enabled() }

func (d *deliverer) routes() []string {
	var r []string
	if d.cfg.DICOMwebURL != "" {
		r = append(r, routeDICOMweb)
	}
	if d.cfg.DIMSEAddress != "" {
		r = append(r, routeDIMSE)
	}
	return r
}

// wants reports whether job j's results go to the PACS.
func (d *deliverer) wants(j *jobs.Job) bool {
	switch {
	case !d.enabled() || j.State != jobs.Succeeded:
		return false
	case d.cfg.Delivery == config.PACSAlways:
		return true
	}
	return j.Options["deliver"] == "pacs"
}

// enqueue records the delivery of succeeded job id: every DICOM result
// (by its content) for every route, durably, before the job's end is
// announced. A job without a delivery is found again at the next start
// (recoverMissing) if the server stops first.
func (d *deliverer) enqueue(ctx context.Context, id string) {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		d.log.Error("PACS delivery: read job", "job_id", id, "err", err)
		return
	}
	if !d.wants(j) {
		return
	}
	dir := filepath.Join(d.outBase, id)
	var insts []jobs.PACSInstance
	n := 0
	for _, f := range j.Results {
		path := filepath.Join(dir, filepath.FromSlash(f.Name))
		if ok, err := pacs.IsDICOM(path); err != nil || !ok {
			continue
		}
		n++
		m, err := pacs.ReadMeta(path)
		for _, r := range d.routes() {
			in := jobs.PACSInstance{Dest: r, File: f.Name, SOPClassUID: m.SOPClassUID, SOPInstanceUID: m.SOPInstanceUID}
			if err != nil {
				in.State, in.Error = jobs.DeliveryFailed, "not sent: "+err.Error()
			}
			insts = append(insts, in)
		}
	}
	created, err := d.store.CreatePACSDelivery(ctx, id, insts)
	if err != nil {
		d.log.Error("PACS delivery: record", "job_id", id, "err", err)
		return
	}
	if !created {
		return
	}
	d.log.Info("PACS delivery queued", "job_id", id, "instances", n, "routes", strings.Join(d.routes(), ","))
	if n == 0 {
		if d.cfg.Delivery == config.PACSOnRequest {
			d.end(ctx, id, jobs.DeliveryFailed, "the job was submitted with deliver=pacs but left no DICOM result (a file with DICM at offset 128)")
		} else {
			d.end(ctx, id, jobs.DeliveryDelivered, "")
		}
		return
	}
	d.poke()
}

func (d *deliverer) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run delivers until ctx ends: at start, the jobs that succeeded without
// a recorded delivery (the server stopped in between) get one; then every
// pending delivery is tried when it is due.
func (d *deliverer) run(ctx context.Context) {
	ids, err := d.store.SucceededWithoutPACSDelivery(ctx, time.Now().Add(-d.cfg.Retry))
	if err != nil {
		d.log.Error("PACS delivery: find jobs without a delivery", "err", err)
	}
	for _, id := range ids {
		d.enqueue(ctx, id)
	}
	for ctx.Err() == nil {
		ids, due, err := d.store.PendingPACSDeliveries(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Error("PACS delivery: list pending", "err", err)
		}
		wait := pacsIdleCheck
		for i, id := range ids {
			if ctx.Err() != nil {
				return
			}
			if until := time.Until(due[i]); until > 0 {
				wait = min(wait, until)
				continue
			}
			d.attempt(ctx, id)
			wait = 0 // look again: the retry time of this one is set
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// attempt tries one pending delivery once: every pending instance to every
// route, then records whether it has ended or when to try again.
func (d *deliverer) attempt(ctx context.Context, id string) {
	log := d.log.With("job_id", id)
	dl, err := d.store.GetPACSDelivery(ctx, id)
	if err != nil {
		log.Error("PACS delivery: read", "err", err)
		return
	}
	if time.Since(dl.StartedAt) > d.cfg.Retry {
		msg := fmt.Sprintf("not delivered within PACS_RETRY_HOURS (%s)", d.cfg.Retry)
		if dl.Error != "" {
			msg += "; last error: " + dl.Error
		}
		d.end(ctx, id, jobs.DeliveryFailed, msg)
		return
	}
	var errs []string
	for _, r := range d.routes() {
		var pending []pacs.Instance
		for _, in := range dl.Instances {
			if in.Dest == r && in.State == jobs.DeliveryPending {
				pending = append(pending, pacs.Instance{
					Path: filepath.Join(d.outBase, id, filepath.FromSlash(in.File)), SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID,
				})
			}
		}
		if len(pending) == 0 {
			continue
		}
		if err := d.send(ctx, log, id, r, pending); err != nil {
			if ctx.Err() != nil {
				return // stopping: the delivery resumes after the restart
			}
			errs = append(errs, r+": "+err.Error())
		}
	}
	if ctx.Err() != nil {
		return
	}
	dl, err = d.store.GetPACSDelivery(ctx, id)
	if err != nil {
		log.Error("PACS delivery: read", "err", err)
		return
	}
	sum := summarize(dl)
	switch sum.State {
	case protocol.PACSDelivered:
		d.end(ctx, id, jobs.DeliveryDelivered, "")
		return
	case protocol.PACSFailed:
		d.end(ctx, id, jobs.DeliveryFailed, sum.Error)
		return
	}
	msg := clip(strings.Join(errs, "; "))
	if msg == "" {
		msg = "the PACS did not answer for every instance"
	}
	next := time.Now().Add(backoff(dl.Tries))
	if err := d.store.SchedulePACSRetry(ctx, id, next, msg); err != nil {
		log.Error("PACS delivery: schedule retry", "err", err)
		return
	}
	log.Warn("PACS delivery will be retried", "error", msg, "retry_at", next.UTC().Format(time.RFC3339), "tries", dl.Tries+1)
	d.notify(id)
}

// backoff is the wait after tries failed tries: 2 s, doubling, at most 10
// minutes.
func backoff(tries int) time.Duration {
	w := pacsFirstRetry
	for i := 0; i < tries && w < pacsMaxRetry; i++ {
		w *= 2
	}
	return min(w, pacsMaxRetry)
}

// send sends the pending instances of one route, in batches. Each batch's
// sends are recorded before it goes, and each answer as it comes. It
// returns the error that stopped it (the rest waits for the next try); an
// error the PACS will answer the same way every time fails the route's
// pending instances.
func (d *deliverer) send(ctx context.Context, log *slog.Logger, id, route string, insts []pacs.Instance) error {
	dir := filepath.Join(d.outBase, id)
	for _, in := range insts {
		if fi, err := os.Lstat(in.Path); err != nil || !fi.Mode().IsRegular() {
			d.fail(ctx, log, id, route, insts, "the result file is no longer on the server")
			return nil
		}
	}
	switch route {
	case routeDICOMweb:
		password, err := d.password()
		if err != nil {
			return err
		}
		c, err := pacs.NewSTOW(d.cfg.DICOMwebURL, d.cfg.Username, password, d.cfg.CAFile)
		if err != nil {
			d.fail(ctx, log, id, route, insts, err.Error())
			return nil
		}
		defer c.Close()
		for len(insts) > 0 {
			batch := stowBatch(insts)
			insts = insts[len(batch):]
			if err := d.store.RecordPACSSends(ctx, id, route, relNames(dir, batch)); err != nil {
				return err
			}
			res, err := c.Store(ctx, batch)
			if err != nil && !pacs.Retryable(err) {
				d.fail(ctx, log, id, route, append(batch, insts...), err.Error())
				return nil
			}
			if err != nil {
				d.record(ctx, log, id, route, dir, batch, nil, err.Error())
				return err
			}
			d.record(ctx, log, id, route, dir, batch, res, "")
		}
	case routeDIMSE:
		c, err := pacs.NewCStore(d.cfg.DIMSEAddress, d.cfg.CalledAE, d.cfg.CallingAE)
		if err != nil {
			d.fail(ctx, log, id, route, insts, err.Error())
			return nil
		}
		for len(insts) > 0 {
			batch := insts[:min(len(insts), pacs.MaxCStoreInstances)]
			insts = insts[len(batch):]
			if err := d.store.RecordPACSSends(ctx, id, route, relNames(dir, batch)); err != nil {
				return err
			}
			_, err := c.Store(ctx, batch, func(i int, r pacs.Result) {
				d.record(ctx, log, id, route, dir, batch[i:i+1], []pacs.Result{r}, "")
			})
			if err != nil {
				d.record(ctx, log, id, route, dir, batch, nil, err.Error())
				return err
			}
		}
	}
	return nil
}

// stowBatch is the first batch of insts within the STOW-RS limits.
func stowBatch(insts []pacs.Instance) []pacs.Instance {
	var bytes int64
	for i, in := range insts {
		if i == pacs.MaxSTOWInstances {
			return insts[:i]
		}
		if fi, err := os.Stat(in.Path); err == nil {
			bytes += fi.Size()
		}
		if i > 0 && bytes > pacs.MaxSTOWBytes {
			return insts[:i]
		}
	}
	return insts
}

func relNames(dir string, insts []pacs.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		rel, _ := filepath.Rel(dir, in.Path)
		out[i] = filepath.ToSlash(rel)
	}
	return out
}

// record stores the outcome of each instance of batch: res[i] when given,
// else pending with errMsg.
func (d *deliverer) record(ctx context.Context, log *slog.Logger, id, route, dir string, batch []pacs.Instance, res []pacs.Result, errMsg string) {
	// What the PACS confirmed is recorded even when the server is stopping:
	// lost, the instance would be sent again after the restart.
	ctx = context.WithoutCancel(ctx)
	names := relNames(dir, batch)
	outs := make([]jobs.PACSOutcome, len(batch))
	for i := range batch {
		o := jobs.PACSOutcome{File: names[i], State: jobs.DeliveryPending, Error: clip(errMsg)}
		if res != nil {
			r := res[i]
			switch {
			case r.Stored:
				o = jobs.PACSOutcome{File: names[i], State: jobs.DeliveryDelivered, Warning: r.Warning}
			case r.Answered:
				o = jobs.PACSOutcome{File: names[i], State: jobs.DeliveryFailed, Error: clip(r.Reason)}
				log.Warn("PACS refused an instance", "route", route, "file", names[i], "reason", r.Reason)
			default:
				o.Error = "the PACS did not answer for it"
			}
			if r.Warning != "" {
				log.Warn("PACS stored an instance with a warning", "route", route, "file", names[i], "warning", r.Warning)
			}
		}
		outs[i] = o
	}
	if err := d.store.RecordPACSOutcomes(ctx, id, route, outs); err != nil {
		log.Error("PACS delivery: record outcomes", "err", err)
	}
}

// fail records the route's instances as failed with msg.
func (d *deliverer) fail(ctx context.Context, log *slog.Logger, id, route string, insts []pacs.Instance, msg string) {
	ctx = context.WithoutCancel(ctx)
	dir := filepath.Join(d.outBase, id)
	outs := make([]jobs.PACSOutcome, len(insts))
	for i, n := range relNames(dir, insts) {
		outs[i] = jobs.PACSOutcome{File: n, State: jobs.DeliveryFailed, Error: clip(msg)}
	}
	if err := d.store.RecordPACSOutcomes(ctx, id, route, outs); err != nil {
		log.Error("PACS delivery: record outcomes", "err", err)
	}
	log.Error("PACS delivery failed", "route", route, "error", msg)
}

// password reads PACS_PASSWORD_FILE, which must be a regular file of
// mode 0600 (or stricter); "" when there is none.
func (d *deliverer) password() (string, error) {
	if d.cfg.PasswordFile == "" {
		return "", nil
	}
	f, err := os.Open(d.cfg.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("PACS_PASSWORD_FILE: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("PACS_PASSWORD_FILE: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", errors.New("PACS_PASSWORD_FILE is not a regular file")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("PACS_PASSWORD_FILE %s has mode %04o: others can read the PACS password; chmod 600 it", d.cfg.PasswordFile, fi.Mode().Perm())
	}
	if fi.Size() > maxPasswordBytes {
		return "", fmt.Errorf("PACS_PASSWORD_FILE is over %d bytes", maxPasswordBytes)
	}
	b := make([]byte, fi.Size())
	n, err := f.Read(b)
	if err != nil && n == 0 && fi.Size() > 0 {
		return "", fmt.Errorf("PACS_PASSWORD_FILE: %w", err)
	}
	return strings.TrimRight(string(b[:n]), "\r\n"), nil
}

// end ends a delivery and lets go of the results it held.
func (d *deliverer) end(ctx context.Context, id string, state jobs.DeliveryState, msg string) {
	if err := d.store.EndPACSDelivery(ctx, id, state, clip(msg)); err != nil {
		d.log.Error("PACS delivery: record end", "job_id", id, "err", err)
		return
	}
	if state == jobs.DeliveryDelivered {
		d.log.Info("PACS delivery done", "job_id", id)
	} else {
		d.log.Error("PACS delivery failed", "job_id", id, "error", msg)
	}
	if d.ended != nil {
		d.ended(ctx, id)
	}
	d.notify(id)
}

func (d *deliverer) notify(id string) {
	if d.changed != nil {
		d.changed(id)
	}
}

// holds reports whether job id's results must stay for its delivery.
func (d *deliverer) holds(ctx context.Context, id string) bool {
	if !d.enabled() {
		return false
	}
	pending, err := d.store.PACSDeliveryPending(ctx, id)
	return err != nil || pending // when in doubt, keep
}

// summarize turns a delivery into its wire form.
func summarize(dl *jobs.PACSDelivery) *protocol.PACSDelivery {
	out := &protocol.PACSDelivery{State: string(dl.State), Error: dl.Error, Destinations: []protocol.PACSDestination{}}
	byRoute := map[string]*protocol.PACSDestination{}
	files := map[string]int{} // file → routes that confirmed it
	var routes []string
	for _, in := range dl.Instances {
		dst := byRoute[in.Dest]
		if dst == nil {
			dst = &protocol.PACSDestination{Route: in.Dest}
			byRoute[in.Dest] = dst
			routes = append(routes, in.Dest)
		}
		dst.Instances++
		if _, ok := files[in.File]; !ok {
			files[in.File] = 0
		}
		switch in.State {
		case jobs.DeliveryDelivered:
			dst.Confirmed++
			files[in.File]++
			if in.Warning != "" {
				dst.Warnings++
			}
		case jobs.DeliveryFailed:
			dst.Failed++
			if dst.Error == "" {
				dst.Error = in.File + ": " + in.Error
			}
		default:
			if dst.Error == "" && in.Error != "" {
				dst.Error = in.Error
			}
		}
	}
	out.Instances = len(files)
	for _, n := range files {
		if n == len(routes) {
			out.Confirmed++
		}
	}
	state := protocol.PACSDelivered
	var firstErr string
	for _, r := range routes {
		dst := byRoute[r]
		switch {
		case dst.Confirmed == dst.Instances:
			dst.State = protocol.PACSDelivered
		case dst.Confirmed+dst.Failed == dst.Instances:
			dst.State = protocol.PACSFailed
			if state != protocol.PACSPending {
				state = protocol.PACSFailed
			}
		default:
			dst.State = protocol.PACSPending
			state = protocol.PACSPending
		}
		if firstErr == "" && dst.Error != "" && dst.State != protocol.PACSDelivered {
			firstErr = r + ": " + dst.Error
		}
		out.Destinations = append(out.Destinations, *dst)
	}
	if dl.State == jobs.DeliveryPending {
		// While pending, the computed state says whether it may end now.
		out.State = state
		if state == protocol.PACSPending && dl.Error == "" {
			out.Error = firstErr
		}
		if state == protocol.PACSFailed {
			out.Error = firstErr
		}
	} else if out.Error == "" && dl.State == jobs.DeliveryFailed {
		out.Error = firstErr
	}
	return out
}

// pacsInfo is job id's PACS delivery as it travels, or nil.
func (d *deliverer) pacsInfo(ctx context.Context, id string) *protocol.Delivery {
	dl, err := d.store.GetPACSDelivery(ctx, id)
	if err != nil {
		return nil
	}
	sum := summarize(dl)
	if dl.State == jobs.DeliveryPending {
		sum.State = protocol.PACSPending // the store's word until the delivery ends
	}
	return &protocol.Delivery{PACS: sum}
}

// newDeliverer makes the server's PACS deliverer: when a delivery ends,
// the results go if the client has them or they have expired.
func (s *Server) newDeliverer() *deliverer {
	d := newDeliverer(s.cfg, s.store, s.log)
	d.changed = func(id string) { s.changed.JobChanged(id, false) }
	d.ended = func(ctx context.Context, id string) {
		j, err := s.store.Get(ctx, id)
		if err != nil || !j.ResultsRemovedAt.IsZero() {
			return
		}
		if !j.DeliveredAt.IsZero() || j.FinishedAt.Before(time.Now().Add(-s.cfg.ResultRetention)) {
			s.removeOutput(ctx, id)
		}
	}
	return d
}

// withDelivery adds job id's PACS delivery to info.
func (s *Server) withDelivery(ctx context.Context, info *protocol.JobInfo) {
	if s.pacs != nil {
		info.Delivery = s.pacs.pacsInfo(ctx, info.JobID)
	}
}

// adminRedeliver starts a failed PACS delivery again: its failed instances
// are sent again, the confirmed ones are not.
func (s *Server) adminRedeliver(ctx context.Context, ss *session, ref *protocol.JobRef) (*protocol.RedeliverReply, error) {
	id := ref.JobID
	if !jobs.ValidID(id) {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", rpc.Truncate(id, 64))
	}
	if !s.pacs.enabled() {
		return nil, protocol.Errorf(protocol.CodeConflict, "PACS delivery is off on this server (PACS_DELIVERY)")
	}
	j, err := s.store.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", id)
	} else if err != nil {
		return nil, rpc.Internal(err)
	}
	if !j.ResultsRemovedAt.IsZero() {
		return nil, protocol.Errorf(protocol.CodeGone, "the results of job %s are no longer on the server: there is nothing to deliver", id)
	}
	err = s.store.RestartPACSDelivery(ctx, id)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return nil, protocol.Errorf(protocol.CodeNotFound, "job %s has no PACS delivery", id)
	case errors.Is(err, jobs.ErrState):
		return nil, protocol.Errorf(protocol.CodeConflict, "the PACS delivery of job %s has not failed: only a failed one is started again", id)
	case err != nil:
		return nil, rpc.Internal(err)
	}
	dl, err := s.store.GetPACSDelivery(ctx, id)
	if err != nil {
		return nil, rpc.Internal(err)
	}
	n := 0
	for _, in := range dl.Instances {
		if in.State == jobs.DeliveryPending {
			n++
		}
	}
	ss.Log.Info("PACS delivery restarted by an administrator", "job_id", id, "pending", n)
	s.pacs.poke()
	s.changed.JobChanged(id, false)
	return &protocol.RedeliverReply{JobID: id, Pending: n}, nil
}

// addPendingDeliveries adds to an admin queue listing the jobs with a
// pending PACS delivery that it lacks (finished more than a day ago).
func (s *Server) addPendingDeliveries(ctx context.Context, q *protocol.QueueReply) {
	ids, _, err := s.store.PendingPACSDeliveries(ctx)
	if err != nil || len(ids) == 0 {
		return
	}
	listed := make(map[string]bool, len(q.Jobs))
	for _, j := range q.Jobs {
		listed[j.JobID] = true
	}
	for _, id := range ids {
		if listed[id] {
			continue
		}
		j, err := s.store.Get(ctx, id)
		if err != nil {
			continue
		}
		info := jobInfo(j)
		s.withDelivery(ctx, info)
		q.Jobs = append(q.Jobs, *info)
	}
	protocol.FitQueue(q)
}

// pacsConfig adds the PACS keys to recon admin status's settings: the
// password file's path, never its content.
func (s *Server) pacsConfig(m map[string]string) {
	p := s.cfg.PACS
	m["PACS_DELIVERY"] = p.Delivery
	if !p.Enabled() {
		return
	}
	m["PACS_DICOMWEB_URL"] = p.DICOMwebURL
	m["PACS_USERNAME"] = p.Username
	m["PACS_PASSWORD_FILE"] = p.PasswordFile
	m["PACS_CA_FILE"] = p.CAFile
	m["PACS_DIMSE_ADDRESS"] = p.DIMSEAddress
	m["PACS_CALLED_AE"] = p.CalledAE
	m["PACS_CALLING_AE"] = p.CallingAE
	m["PACS_RETRY_HOURS"] = strconv.FormatFloat(p.Retry.Hours(), 'f', -1, 64)
}
