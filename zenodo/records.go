package zenodo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Paging bounds.
const (
	pageSize = 100
	maxPages = 100
)

// checkRecID rejects ids that are not record ids.
func checkRecID(id string) error {
	if !recIDRE.MatchString(id) {
		return fmt.Errorf("bad Zenodo record id %q: %w", truncate(id, 64), errdefs.ErrInvalidArgument)
	}
	return nil
}

// GetRecord fetches the published record id (GET /api/records/<id>). For a
// concept id Zenodo either redirects to the latest version or answers 404;
// use Latest or Resolve for concepts.
func (c *Client) GetRecord(ctx context.Context, id string) (*Record, error) {
	if err := checkRecID(id); err != nil {
		return nil, err
	}
	var rec Record
	if err := c.doJSON(ctx, http.MethodGet, c.endpoint(nil, "api", "records", id), idempotent, nil, &rec); err != nil {
		return nil, fmt.Errorf("getting record %s: %w", id, err)
	}
	return &rec, nil
}

// Files lists the files of the published record id.
func (c *Client) Files(ctx context.Context, id string) ([]File, error) {
	rec, err := c.GetRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	return rec.Files, nil
}

// Latest returns the newest published version of the concept or version
// id (GET /api/records/<id>/versions/latest). When Zenodo has no such route
// for id, a GET of the record that redirects to its latest version is
// accepted too.
func (c *Client) Latest(ctx context.Context, id string) (*Record, error) {
	if err := checkRecID(id); err != nil {
		return nil, err
	}
	var rec Record
	err := c.doJSON(ctx, http.MethodGet, c.endpoint(nil, "api", "records", id, "versions", "latest"), idempotent, nil, &rec)
	if err == nil {
		return &rec, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("getting latest version of %s: %w", id, err)
	}
	alt, aerr := c.GetRecord(ctx, id)
	if aerr == nil {
		if alt.RecordID() != id || isLast(alt) {
			return alt, nil
		}
	}
	return nil, fmt.Errorf("getting latest version of %s: %w", id, err)
}

// isLast reports whether rec says it is its concept's newest version.
func isLast(rec *Record) bool {
	r := rec.Metadata.Relations
	return r != nil && len(r.Version) > 0 && r.Version[0].IsLast
}

// Versions lists every published version of the record id (a concept or
// any of its versions), oldest first, reading all pages of
// /api/records/<id>/versions.
func (c *Client) Versions(ctx context.Context, id string) ([]Record, error) {
	if err := checkRecID(id); err != nil {
		return nil, err
	}
	recs, err := c.versions(ctx, id)
	if errors.Is(err, ErrNotFound) {
		// Concept ids may have no records route: list from the latest.
		latest, lerr := c.Latest(ctx, id)
		if lerr != nil {
			return nil, fmt.Errorf("listing versions of %s: %w", id, err)
		}
		if lid := latest.RecordID(); lid != id {
			recs, err = c.versions(ctx, lid)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing versions of %s: %w", id, err)
	}
	return recs, nil
}

func (c *Client) versions(ctx context.Context, id string) ([]Record, error) {
	var all []Record
	seen := map[string]bool{}
	for page := 1; page <= maxPages; page++ {
		q := url.Values{"size": {strconv.Itoa(pageSize)}, "page": {strconv.Itoa(page)}, "sort": {"version"}}
		var hits recordHits
		if err := c.doJSON(ctx, http.MethodGet, c.endpoint(q, "api", "records", id, "versions"), idempotent, nil, &hits); err != nil {
			return nil, err
		}
		added := 0
		for _, r := range hits.Hits.Hits {
			if rid := r.RecordID(); !seen[rid] {
				seen[rid] = true
				all = append(all, r)
				added++
			}
		}
		if added == 0 || len(all) >= int(hits.Hits.Total) || len(hits.Hits.Hits) < pageSize {
			break
		}
	}
	sortVersions(all)
	return all, nil
}

// sortVersions orders records oldest first: by version index, then by
// creation time, then by id.
func sortVersions(recs []Record) {
	slices.SortStableFunc(recs, func(a, b Record) int {
		if ai, bi := a.VersionIndex(), b.VersionIndex(); ai != bi && ai >= 0 && bi >= 0 {
			return ai - bi
		}
		if c := a.Created.Compare(b.Created.Time); c != 0 {
			return c
		}
		ai, _ := strconv.ParseInt(a.RecordID(), 10, 64)
		bi, _ := strconv.ParseInt(b.RecordID(), 10, 64)
		switch {
		case ai < bi:
			return -1
		case ai > bi:
			return 1
		}
		return 0
	})
}

// Resolve finds the record a reference names:
//   - a version DOI without tag: exactly that version;
//   - a concept DOI, or the tag "latest": the newest published version;
//   - a tag: the version of the record's concept whose metadata.version
//     equals the tag (the newest such, if several). A version DOI with its
//     own tag costs one request; with another version's tag it selects that
//     sibling, as a tag selects an image in a repository.
//
// A missing record or tag is an error wrapping ErrNotFound that names the
// tag and the versions that exist. ref.Digest is not checked here: it pins
// a manifest inside the record, which the caller verifies.
func (c *Client) Resolve(ctx context.Context, ref Reference) (*Record, error) {
	if err := checkRecID(ref.RecID); err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	rec, err := c.GetRecord(ctx, ref.RecID)
	isConcept := false
	switch {
	case err == nil:
		isConcept = rec.RecordID() != ref.RecID // redirected to the latest version
	case errors.Is(err, ErrNotFound):
		latest, lerr := c.Latest(ctx, ref.RecID)
		if lerr != nil {
			return nil, fmt.Errorf("resolving %s: %w", ref, err)
		}
		rec, isConcept = latest, true
	default:
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	log.G(ctx).WithFields(log.Fields{"ref": ref.String(), "record": rec.RecordID(), "concept": isConcept}).Debug("zenodo: resolved record")

	switch {
	case ref.Tag == "" || (ref.Tag == "latest" && isConcept):
		return rec, nil
	case ref.Tag == "latest":
		latest, err := c.Latest(ctx, rec.RecordID())
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", ref, err)
		}
		return latest, nil
	case rec.Version() == ref.Tag:
		return rec, nil
	}
	versions, err := c.Versions(ctx, rec.RecordID())
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	for i := len(versions) - 1; i >= 0; i-- {
		if versions[i].Version() == ref.Tag {
			return &versions[i], nil
		}
	}
	return nil, fmt.Errorf("resolving %s: no version tagged %q; the record has %s: %w",
		ref, ref.Tag, describeVersions(versions), ErrNotFound)
}

// describeVersions lists versions for an error message (bounded).
func describeVersions(versions []Record) string {
	if len(versions) == 0 {
		return "no published versions"
	}
	const maxShown = 20
	var parts []string
	for i, v := range versions {
		if i == maxShown {
			parts = append(parts, fmt.Sprintf("and %d more", len(versions)-maxShown))
			break
		}
		tag := v.Version()
		if tag == "" {
			tag = "(untagged)"
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", clip(tag, 64), v.DOI))
	}
	return "versions " + strings.Join(parts, ", ")
}

// SearchDepositions returns the token owner's depositions, drafts and all
// published versions, whose title is exactly title (Zenodo's phrase search
// is fuzzier; the client filters). It reads every page of
// GET /api/deposit/depositions?q=title:"…"&allversions=true and waits on the
// search budget too.
func (c *Client) SearchDepositions(ctx context.Context, title string) ([]Deposition, error) {
	if strings.TrimSpace(title) == "" {
		return nil, fmt.Errorf("searching depositions: empty title: %w", errdefs.ErrInvalidArgument)
	}
	q := `title:"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(title) + `"`
	var out []Deposition
	for page := 1; page <= maxPages; page++ {
		v := url.Values{"q": {q}, "allversions": {"true"}, "size": {strconv.Itoa(pageSize)}, "page": {strconv.Itoa(page)}}
		var deps []Deposition
		cl := &call{method: http.MethodGet, url: c.endpoint(v, "api", "deposit", "depositions"), policy: idempotent, search: true, size: -1}
		cl.decode = func(resp *http.Response) error { return decodeJSON(resp.Body, &deps) }
		if _, err := c.do(ctx, cl); err != nil {
			return nil, fmt.Errorf("searching depositions titled %q: %w", title, err)
		}
		for _, d := range deps {
			if d.Title == title || d.Metadata.Title == title {
				out = append(out, d)
			}
		}
		if len(deps) < pageSize {
			break
		}
	}
	return out, nil
}
