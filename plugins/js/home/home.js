// The demo's aggregate API in JavaScript: `GET /api/home-js?user=N` fans out to four
// services at once and returns one JSON document for the home screen. The same endpoint as
// the Rust `plugins/home`, answer for answer (tests/tests/js_plugins.rs compares them).
//
// Partial failure is normal: `profile` is essential (without it the endpoint answers 502);
// the other sections degrade to defaults, and `degraded` lists them.
//
//   kind = "endpoint"
//   [config]
//   timeout_ms = 300        # per call

import { config, metrics, query } from 'portcullis-sdk';
import { Call, fetchAll, jsonResponse, ok2xx } from 'portcullis-sdk/endpoint';

const SECTIONS = ['profile', 'recommendations', 'ratings', 'artwork'];

/** What a section shows when its service fails: empty lists, never a broken page. */
function fallback(section) {
  switch (section) {
    case 'recommendations':
      return { items: [] };
    case 'ratings':
      return { ratings: [] };
    case 'artwork':
      return { images: [] };
    default:
      return null;
  }
}

export function handle(req) {
  const user = query(req, 'user') ?? '1';
  if (user.length === 0 || user.length > 12 || !/^[0-9]+$/.test(user)) {
    return jsonResponse(400, { error: 'user must be a number' });
  }
  const timeout = Number(config.parse('timeout_ms') ?? 300);
  const calls = SECTIONS.map((s) =>
    Call.get(s, `/${s}?user=${user}`).timeout(timeout).forwardContext(req),
  );
  const results = fetchAll(calls);

  const doc = {};
  const degraded = [];
  SECTIONS.forEach((name, i) => {
    try {
      doc[name] = ok2xx(results[i]).json();
    } catch (e) {
      metrics.count(`degraded_${name}`, 1);
      degraded.push({ section: name, reason: e.message });
      doc[name] = fallback(name);
    }
  });
  if (doc.profile === null || doc.profile === undefined) {
    return jsonResponse(502, { error: 'profile unavailable', degraded });
  }
  doc.degraded = degraded;
  return jsonResponse(200, doc);
}
