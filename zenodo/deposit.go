package zenodo

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// checkDepID rejects ids that are not deposition ids.
func checkDepID(id string) error {
	if !recIDRE.MatchString(id) {
		return fmt.Errorf("bad Zenodo deposition id %q: %w", truncate(id, 64), errdefs.ErrInvalidArgument)
	}
	return nil
}

// depositionBody is the body of create and update requests.
type depositionBody struct {
	Metadata Metadata `json:"metadata"`
}

// CreateDeposition creates a draft deposition (POST /api/deposit/depositions,
// 201) with metadata md. Unless md sets prereserve_doi, it asks Zenodo to
// reserve the DOI, which the returned draft's ReservedDOI then holds. Not
// retried once the server may have acted (a retry could make two drafts).
func (c *Client) CreateDeposition(ctx context.Context, md Metadata) (*Deposition, error) {
	if md.PrereserveDOI == nil {
		if _, ok := md.Extra["prereserve_doi"]; !ok {
			extra := make(map[string]json.RawMessage, len(md.Extra)+1)
			for k, v := range md.Extra {
				extra[k] = v
			}
			extra["prereserve_doi"] = json.RawMessage("true")
			md.Extra = extra
		}
	}
	var dep Deposition
	err := c.doJSON(ctx, http.MethodPost, c.endpoint(nil, "api", "deposit", "depositions"), unsent,
		depositionBody{md}, &dep, http.StatusCreated, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("creating deposition: %w", err)
	}
	return &dep, nil
}

// GetDeposition fetches deposition id (GET /api/deposit/depositions/<id>).
func (c *Client) GetDeposition(ctx context.Context, id string) (*Deposition, error) {
	if err := checkDepID(id); err != nil {
		return nil, err
	}
	var dep Deposition
	if err := c.doJSON(ctx, http.MethodGet, c.endpoint(nil, "api", "deposit", "depositions", id), idempotent, nil, &dep); err != nil {
		return nil, fmt.Errorf("getting deposition %s: %w", id, err)
	}
	return &dep, nil
}

// UpdateMetadata replaces the metadata of draft id with md
// (PUT /api/deposit/depositions/<id>).
func (c *Client) UpdateMetadata(ctx context.Context, id string, md Metadata) (*Deposition, error) {
	if err := checkDepID(id); err != nil {
		return nil, err
	}
	var dep Deposition
	err := c.doJSON(ctx, http.MethodPut, c.endpoint(nil, "api", "deposit", "depositions", id), idempotent,
		depositionBody{md}, &dep, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("updating metadata of deposition %s: %w", id, err)
	}
	return &dep, nil
}

// NewVersion makes a new version draft of published deposition id
// (POST …/actions/newversion, then GET its links.latest_draft) and returns
// the draft. The draft inherits the files and drops metadata.version: the
// caller sets it again with UpdateMetadata.
func (c *Client) NewVersion(ctx context.Context, id string) (*Deposition, error) {
	if err := checkDepID(id); err != nil {
		return nil, err
	}
	var dep Deposition
	err := c.doJSON(ctx, http.MethodPost, c.endpoint(nil, "api", "deposit", "depositions", id, "actions", "newversion"), unsent,
		nil, &dep, http.StatusCreated, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("making new version of deposition %s: %w", id, err)
	}
	link := dep.Links["latest_draft"]
	if link == "" {
		return nil, fmt.Errorf("making new version of deposition %s: response has no links.latest_draft: %w", id, errdefs.ErrUnknown)
	}
	u, err := c.resolveLink(link)
	if err != nil {
		return nil, fmt.Errorf("making new version of deposition %s: %w", id, err)
	}
	var draft Deposition
	if err := c.doJSON(ctx, http.MethodGet, u, idempotent, nil, &draft); err != nil {
		return nil, fmt.Errorf("getting new version draft of deposition %s: %w", id, err)
	}
	return &draft, nil
}

// Publish publishes draft id (POST …/actions/publish, 202) and returns the
// published deposition. When the outcome is unknown (a 5xx or a connection
// lost after sending), it checks the deposition's state before trying
// again, so a deposition is never published twice.
func (c *Client) Publish(ctx context.Context, id string) (*Deposition, error) {
	if err := checkDepID(id); err != nil {
		return nil, err
	}
	u := c.endpoint(nil, "api", "deposit", "depositions", id, "actions", "publish")
	for attempt := 1; ; attempt++ {
		var dep Deposition
		err := c.doJSON(ctx, http.MethodPost, u, unsent, nil, &dep, http.StatusAccepted, http.StatusOK, http.StatusCreated)
		if err == nil {
			return &dep, nil
		}
		var e *Error
		if !errors.As(err, &e) || !e.Temporary() || e.StatusCode == http.StatusTooManyRequests || attempt >= c.maxAttempts || ctx.Err() != nil {
			return nil, fmt.Errorf("publishing deposition %s: %w", id, err)
		}
		cur, gerr := c.GetDeposition(ctx, id)
		if gerr == nil && cur.Published() {
			return cur, nil
		}
		delay := c.backoffDelay(attempt)
		c.emit(Event{Kind: EventRetry, Method: http.MethodPost, URL: redactURL(u), Attempt: attempt, StatusCode: e.StatusCode, Duration: delay, Err: e})
		log.G(ctx).WithField("deposition", id).WithError(e).Info("zenodo publish failed and the draft is unpublished, retrying")
		if err := c.clock.Sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("publishing deposition %s: %w", id, errors.Join(err, e))
		}
	}
}

// Discard deletes unpublished draft id (DELETE /api/deposit/depositions/<id>, 204).
func (c *Client) Discard(ctx context.Context, id string) error {
	if err := checkDepID(id); err != nil {
		return err
	}
	cl := &call{method: http.MethodDelete, url: c.endpoint(nil, "api", "deposit", "depositions", id), policy: idempotent,
		size: -1, deleteIdempotent: true, expect: []int{http.StatusNoContent, http.StatusOK, http.StatusAccepted}}
	cl.decode = discardBody
	if _, err := c.do(ctx, cl); err != nil {
		return fmt.Errorf("discarding deposition %s: %w", id, err)
	}
	return nil
}

// DepositionFiles lists the files of deposition id
// (GET /api/deposit/depositions/<id>/files).
func (c *Client) DepositionFiles(ctx context.Context, id string) ([]File, error) {
	if err := checkDepID(id); err != nil {
		return nil, err
	}
	var files []File
	if err := c.doJSON(ctx, http.MethodGet, c.endpoint(nil, "api", "deposit", "depositions", id, "files"), idempotent, nil, &files); err != nil {
		return nil, fmt.Errorf("listing files of deposition %s: %w", id, err)
	}
	return files, nil
}

// DeleteFile deletes file fileID (a deposition file id, see DepositionFiles)
// from draft depID (DELETE /api/deposit/depositions/<id>/files/<file-id>, 204).
func (c *Client) DeleteFile(ctx context.Context, depID, fileID string) error {
	if err := checkDepID(depID); err != nil {
		return err
	}
	if fileID == "" || strings.ContainsAny(fileID, "/?#") {
		return fmt.Errorf("bad file id %q: %w", truncate(fileID, 64), errdefs.ErrInvalidArgument)
	}
	cl := &call{method: http.MethodDelete, url: c.endpoint(nil, "api", "deposit", "depositions", depID, "files", fileID), policy: idempotent,
		size: -1, deleteIdempotent: true, expect: []int{http.StatusNoContent, http.StatusOK}}
	cl.decode = discardBody
	if _, err := c.do(ctx, cl); err != nil {
		return fmt.Errorf("deleting file %s of deposition %s: %w", fileID, depID, err)
	}
	return nil
}

func discardBody(resp *http.Response) error {
	_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return err
}

// checkFileName rejects names Zenodo cannot store as one key.
func checkFileName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") || len(name) > 1024 {
		return fmt.Errorf("bad file name %q: %w", truncate(name, 64), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Upload streams size bytes of r into draft dep as file name
// (PUT <links.bucket>/<name>), computing the md5 on the way, and checks it
// and the size against what Zenodo stored. On a mismatch it deletes the
// stored file and returns an error wrapping ErrChecksumMismatch.
//
// progress, if not nil, is called after each read with the bytes sent so
// far in the current attempt (it restarts from 0 when a retry starts over).
// The upload is retried only when r is an io.Seeker, which is rewound to
// where it was when Upload was called; otherwise a failed upload returns
// its error. size must be the exact length; -1 (unknown) sends chunked,
// which Zenodo may refuse.
func (c *Client) Upload(ctx context.Context, dep *Deposition, name string, r io.Reader, size int64, progress func(n int64)) (*File, error) {
	if dep == nil {
		return nil, fmt.Errorf("uploading %q: nil deposition: %w", name, errdefs.ErrInvalidArgument)
	}
	if err := checkFileName(name); err != nil {
		return nil, err
	}
	bucket := dep.Links["bucket"]
	if bucket == "" {
		return nil, fmt.Errorf("uploading %s to deposition %s: no links.bucket (is it published?): %w", name, dep.ID, errdefs.ErrFailedPrecondition)
	}
	bu, err := c.resolveLink(bucket)
	if err != nil {
		return nil, fmt.Errorf("uploading %s to deposition %s: %w", name, dep.ID, err)
	}
	u := strings.TrimSuffix(bu, "/") + "/" + url.PathEscape(name)

	seeker, _ := r.(io.Seeker)
	var start int64
	if seeker != nil {
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
		}
	}
	var (
		hr       *hashingReader
		attempts int
	)
	cl := &call{
		method: http.MethodPut,
		url:    u,
		header: http.Header{"Content-Type": {"application/octet-stream"}},
		size:   size,
		policy: idempotent, // a PUT of the same key replaces it
		expect: []int{http.StatusOK, http.StatusCreated},
	}
	cl.canReplay = func() bool { return seeker != nil }
	cl.body = func() (io.Reader, error) {
		attempts++
		if attempts > 1 {
			if seeker == nil {
				return nil, errNotReplayable
			}
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return nil, errors.Join(errNotReplayable, err)
			}
		}
		body := r
		if size >= 0 {
			body = io.LimitReader(r, size)
		}
		hr = &hashingReader{r: body, h: md5.New(), progress: progress}
		return hr, nil
	}
	var f File
	cl.decode = func(resp *http.Response) error { return decodeJSON(resp.Body, &f) }
	if _, err := c.do(ctx, cl); err != nil {
		return nil, fmt.Errorf("uploading %s to deposition %s: %w", name, dep.ID, err)
	}
	c.emit(Event{Kind: EventTransfer, Method: http.MethodPut, URL: redactURL(u), Bytes: hr.n})

	sum := hex.EncodeToString(hr.h.Sum(nil))
	if f.Key == "" {
		f.Key = name
	}
	if got := f.MD5(); got != sum || f.Size != hr.n {
		mismatch := fmt.Errorf("uploading %s to deposition %s: Zenodo stored %d bytes with md5 %q, the client sent %d bytes with md5 %s: %w",
			name, dep.ID, f.Size, got, hr.n, sum, ErrChecksumMismatch)
		if derr := c.deleteUploaded(ctx, dep, name); derr != nil {
			log.G(ctx).WithError(derr).WithField("file", name).Warn("zenodo: could not delete a corrupt upload")
			return nil, errors.Join(mismatch, derr)
		}
		return nil, mismatch
	}
	return &f, nil
}

// deleteUploaded deletes file name from draft dep after a bad upload.
func (c *Client) deleteUploaded(ctx context.Context, dep *Deposition, name string) error {
	files, err := c.DepositionFiles(ctx, string(dep.ID))
	if err != nil {
		return err
	}
	for _, f := range files {
		if f.Key == name && f.ID != "" {
			return c.DeleteFile(ctx, string(dep.ID), f.ID)
		}
	}
	return fmt.Errorf("deleting corrupt upload %s: not in the deposition's files: %w", name, ErrNotFound)
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	progress func(int64)
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if n > 0 {
		h.h.Write(p[:n])
		h.n += int64(n)
		if h.progress != nil {
			h.progress(h.n)
		}
	}
	return n, err
}
