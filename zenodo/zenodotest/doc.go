// Package zenodotest is a fake Zenodo for tests, demos and benchmarks: an
// http.Handler that serves the legacy deposit API and the records API with
// the JSON shapes of real Zenodo responses (the fixtures in
// testdata/fixtures, copied from /work/shared/zenodo-fixtures), keeps file
// contents on disk, and can be made slow, rate limited or faulty.
//
//	s, ts := zenodotest.NewTestServer(t, zenodotest.WithRateLimit(60, 2000))
//	pub, _ := s.Publish(zenodotest.SeedRecord{Title: "x", Files: []zenodotest.SeedFile{{Name: "a", Data: b}}})
//	s.InjectFault(zenodotest.Fault{PathContains: "/files/", ResetAfter: 4096})
//	... client against ts.URL, token zenodotest.DefaultToken ...
//	s.Requests() // what the client did
//
// # Routes
//
// Legacy deposit API (bearer token; 401 with fixture 80's body without one):
// POST/GET /api/deposit/depositions, GET/PUT/DELETE .../<id>, GET/POST
// .../<id>/files, GET/DELETE .../<id>/files/<file-id>, POST
// .../<id>/actions/{publish,newversion,edit,discard}; buckets:
// GET /api/files/<bucket>, PUT/GET/DELETE /api/files/<bucket>/<key>.
// Records API (public): GET /api/records (search), /api/records/<id>,
// .../versions, .../versions/latest, .../files, .../files/<key>,
// .../files/<key>/content; GET /api/records/<id>/draft/files/<key>/content
// (owner); web routes GET /records/<id>/files/<key>[?download=1] and the
// old /record/<id>/files/<key> (301 to the former).
//
// # Zenodo behaviours reproduced, and where they come from
//
//   - Deposition JSON (created/modified, id, conceptrecid, doi/doi_url when a
//     DOI is set, metadata with prereserve_doi {doi, recid}, title, links
//     {self, html, badge, files, bucket, latest_draft(_html), publish, edit,
//     discard, newversion, + doi, record, latest... once published},
//     record_id, owner, files[] {id, filename, filesize, checksum without
//     "md5:", links {self, download}}, state unsubmitted/inprogress/done,
//     submitted): fixtures 01-04, zenodo-rdm legacy serializer.
//   - The concept recid is reserved just below the first version's id
//     (fixtures 10, 36, 39); DOIs are <prefix>/zenodo.<id>.
//   - A DOI given in metadata.doi becomes the deposition's doi (fixtures 02,
//     03, 04b; zenodo-rdm legacy deserializer's pids.doi).
//   - Metadata PUT replaces the whole metadata (invenio-rdm-records
//     MetadataComponent.update_draft).
//   - Bucket PUT answers 201 {created, updated, version_id, key, size,
//     mimetype, checksum "md5:<hex>", is_head, delete_marker, links {self,
//     version, uploads}} (fixture 05); a PUT of an existing key replaces it.
//   - Empty files are refused: 400 "Empty files are not accepted."
//     (zenodo-rdm RECORDS_RESOURCES_ALLOW_EMPTY_FILES = False).
//   - At most 100 files per record: 400 "Uploading the selected files would
//     result in N files (max is 100)." (invenio-records-resources
//     FilesCountExceededException); at most 50*10^9 bytes per record, checked
//     from Content-Length and while streaming: 400 "Bucket quota exceeded."
//     (RDM_FILES_DEFAULT_QUOTA_SIZE; message from invenio-files-rest).
//   - Published files are immutable: PUT/DELETE on a published bucket is 403
//     "Bucket is locked for modifications." (invenio-files-rest
//     BucketLockedError).
//   - Publish answers 202 Accepted with the deposition (fixtures 36, 39) and
//     is refused with the RDM validation body (400 "A validation error
//     occurred.", errors[{field, messages}]) without files, title,
//     upload_type or creators.
//   - newversion answers 201 with the new draft (zenodo-rdm legacy
//     resources: read_draft of the new version), whose links.latest_draft is
//     itself; it inherits the latest version's files and metadata without
//     metadata.version, with a new publication_date (invenio-rdm-records
//     new_version_skip_fields) and without a DOI (fixture 37). One open draft
//     per concept: newversion returns the open draft when it has no files,
//     and 400 files.enabled "Please remove all files first." when it has
//     (invenio-drafts-resources new_version + legacy import_files; reported
//     by Zenodo users). GET of a published deposition points
//     links.latest_draft at the concept's open draft when there is one.
//   - Record JSON (created, modified, id, conceptrecid, doi, conceptdoi,
//     doi_url, metadata with resource_type {title, type}, license {id},
//     relations.version[{index, is_last, parent}], title, links {self,
//     self_html, doi, parent, parent_doi, latest, latest_html, versions,
//     files, archive, ...}, updated, recid, revision, files[] {id, key, size,
//     checksum "md5:", links.self .../files/<key>/content}, swh, owners[{id}],
//     status "published", stats, state "done", submitted true): fixtures 10,
//     36, 39.
//   - GET /api/records/<concept recid> is 404 (zenodo/zenodo#2499, after the
//     Oct 2023 migration); WithConceptRedirect gives the 302 that
//     invenio-rdm-records has had since Nov 2023. A draft's id is 404.
//   - /api/records/<id>/versions/latest redirects (302) to the newest
//     published version, for a version id or a concept recid
//     (invenio-drafts-resources read_latest); Go clients follow it.
//   - /api/records/<id>/versions lists published versions, newest first
//     ("version" sort), paged with page/size, {"hits": {"hits", "total"},
//     "links", "sortBy"}; page*size > 10000 is 400.
//   - Searches take q (a query_string subset: see search.go), page, size,
//     sort and allversions; without allversions only the newest version of
//     each concept comes back, and all_versions (the Python donodo bug) is
//     ignored. The deposit list is a JSON array (fixture 03); the records
//     search is {"aggregations", "hits", "links", "sortBy"} (fixture 20's
//     envelope). WithIndexDelay models the search index lag.
//   - Range on /records/<id>/files/<key> (zenodo/zenodo#2593; fixture 92 for
//     the 206 shape): one range -> 206 + Content-Range, suffix ranges
//     (bytes=-N, as curl -r -180 in fixture 92), 416 + "Content-Range:
//     bytes */size" when unsatisfiable; several ranges, or bad syntax, get
//     the whole file with 200 (allowed by RFC 9110; the fake never sends
//     multipart/byteranges). Accept-Ranges and ETag are not sent (fixture
//     90). If-Range is compared with Last-Modified.
//   - /api/records/<id>/files/<key>/content ignores Range and answers 200
//     (zenodo/zenodo#2593, #2575).
//   - HEAD on downloads answers 200 with Content-Type, Content-Length,
//     Content-Disposition inline and Last-Modified (fixtures 90, 91);
//     WithUnreliableHEAD drops Content-Length, for clients' fallback paths.
//   - Every response has X-RateLimit-Limit, X-RateLimit-Remaining,
//     X-RateLimit-Reset (epoch) and Retry-After (seconds to the reset), and
//     /api responses have Access-Control-Allow-Origin and
//     Access-Control-Expose-Headers (fixtures 01, 05, 30-39, 80-82, 90).
//     Limits are fixed windows per token, or per IP without one
//     (flask-limiter; zenodo-rdm RATELIMIT_GUEST_USER "8000 per hour;133
//     per minute", "records.search: 30 per minute"); past them: 429,
//     Retry-After and {"message": "N per 1 minute", "status": 429}
//     (showyourwork/showyourwork#238).
//   - Error bodies: {"message", "status"} for 401 (fixtures 80, 82, same
//     text) and 404 "PID does not exist." (fixture 81); 500 {"error_id",
//     "message", "status"} (fixture 83); 400 validation bodies of the RDM era;
//     injected 502/504 as nginx HTML pages without the application's
//     rate-limit headers. Note for clients: since every application response
//     carries Retry-After (seconds to the window's reset, up to 60), a client
//     that sleeps for Retry-After on a 500/503 waits up to a minute, on
//     Zenodo as here; Fault.RetryAfter sets it explicitly.
//   - JSON records carry ETag "<revision>" (fixtures 01, 30, 36).
//   - Tokens: Authorization: Bearer, or ?access_token= (redacted in the
//     request log); each token is a separate user.
//
// # Not reproduced
//
// The InvenioRDM draft API (POST /api/records, .../draft, .../draft/files,
// fixtures 30-35, 37, 38): the client uses the legacy deposit API. Also:
// gzip-encoded JSON (34, 35), cookies, the security headers (CSP, HSTS...),
// communities, embargo enforcement, restricted files, the "files-archive"
// zip, metadata-only records, multipart (chunked) bucket uploads, the
// pre-2023 search hit shape (20: files[].bucket/type, links.html/badge), the
// sandbox's hard-coded 10.5281 in prereserve_doi (the fake uses the
// configured prefix), the separate guest/authenticated limits (one limit
// applies to all clients), DataCite's handle.stage.datacite.org doi_url
// (always https://doi.org/), and search relevance (hits are sorted by
// update time).
package zenodotest
