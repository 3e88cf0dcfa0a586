/**
 * A property-based fuzz test of the HTTP API against a real sandbox, over real HTTP:
 * sequences of calls to every route README lists, valid ones mixed with malformed and
 * edge-case ones (wrong or missing keys, bodies that are not JSON or not UTF-8, wrong
 * JSON types, missing and unknown fields, huge and empty strings, unicode, numbers out
 * of range, lists too long, bad ISO dates, unknown or repeated query parameters, bad
 * path ids, wrong methods, wrong content types). For every answer:
 *
 * - never a 5xx;
 * - every 4xx is `{"error":{"code","message"}}` with a code from README's error table,
 *   under the status that table gives it (429s with `Retry-After`);
 * - nothing half-written: after each run, what the API lists (the tenant's webhooks,
 *   the tenants, the switches, the tenant's limits) is exactly what a model of the
 *   accepted calls predicts, an idempotency key of a refused publish is free (its event
 *   is `accepted` when sent again, never a `duplicate`), and, once every run is done,
 *   each run's event stream holds exactly the events that were accepted.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

/**
 * Runs of the property: about 30 s of calls on a quiet machine (some 30 calls a run), 60
 * to 90 s beside the rest of the suite. To hunt, FUZZ_RUNS=2000 (FUZZ_SEED replays a
 * failure's seed, FUZZ_STATS=1 prints how many answers of each kind came back).
 */
const NUM_RUNS = Number(process.env.FUZZ_RUNS ?? 100);
const MAX_COMMANDS = 30;
const MAX_WEBHOOKS = 3;
/** Every run's events name this parent (or are on it), so its stream sees all of them. */
const STREAM = 'project:1';
const RESOURCES = ['task:1', 'task:2', 'task:3', STREAM] as const;

/** README's error table: the public contract of every 4xx and 5xx. */
const DOCUMENTED: ReadonlyMap<string, number> = (() => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const rows = [...readme.matchAll(/^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|/gm)];
  return new Map(rows.map(([, code, status]) => [code as string, Number(status)]));
})();

let sandbox: Sandbox;
let receiver: Receiver;
let other: { id: string; key: string };
let otherWebhook: string;

withSandbox({ canary: false, logLevel: 'ERROR', config: { deliveryTimeoutMs: 1_000 } }, async (s, r) => {
  [sandbox, receiver] = [s, r];
  receiver.answer('/fail', 500);
  other = await createTenant(sandbox, 'other');
  const created = await send('POST', '/v1/webhooks', {
    key: other.key,
    json: { resource: STREAM, url: `${receiver.url}/ok/other` },
  });
  otherWebhook = created.json.id;
});

// ---------------------------------------------------------------------------
// The client: node:http, so that paths, headers and bodies go as written.

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  // biome-ignore lint/suspicious/noExplicitAny: answers are checked field by field.
  readonly json: any;
}

interface Request {
  /** A key for `Authorization: Bearer <key>`. */
  readonly key?: string;
  /** The whole Authorization header instead (null: none). */
  readonly authorization?: string | null;
  readonly json?: unknown;
  readonly raw?: string | Buffer;
  /** null: no content-type header. */
  readonly contentType?: string | null;
  /** Sent without a length, in two chunks (Transfer-Encoding: chunked). */
  readonly chunked?: boolean;
}

function send(method: string, path: string, request: Request = {}): Promise<Answer> {
  const raw = request.raw ?? (request.json === undefined ? undefined : JSON.stringify(request.json));
  const body = typeof raw === 'string' ? expand(raw) : raw;
  const headers: Record<string, string> = {};
  const authorization = request.authorization === undefined ? request.key && `Bearer ${request.key}` : request.authorization;
  if (authorization !== undefined && authorization !== null) headers.authorization = expand(authorization);
  if (body !== undefined) {
    if (request.contentType !== null) headers['content-type'] = request.contentType ?? 'application/json';
    if (!request.chunked) headers['content-length'] = String(Buffer.byteLength(body));
  }
  const url = new URL(sandbox.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path: expand(path), headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (request.chunked && body !== undefined) {
      const bytes = Buffer.from(body);
      req.write(bytes.subarray(0, bytes.length >> 1));
      req.end(bytes.subarray(bytes.length >> 1));
    } else {
      req.end(body);
    }
  });
}

/** What every answer must be: no 5xx, and an error in the documented shape with a documented code. */
function checkAnswer(what: string, method: string, answer: Answer): void {
  const where = `${what}: ${answer.status} ${answer.text.slice(0, 300)}`;
  expect(answer.status, where).toBeLessThan(500);
  if (answer.status < 400) return;
  // HEAD answers carry no body.
  if (method === 'HEAD') return;
  const { error, ...rest } = answer.json ?? {};
  // Only GET /v1/events's 412 carries something besides the error: a fresh sync token.
  if (answer.status === 412) expect(Object.keys(rest), where).toEqual(['sync']);
  else expect(rest, where).toEqual({});
  expect(error, where).toEqual({ code: expect.any(String), message: expect.any(String) });
  expect(DOCUMENTED.has(error.code), `${where}: code not in README's error table`).toBe(true);
  if (answer.status !== 412) expect(answer.status, where).toBe(DOCUMENTED.get(error.code));
  expect(error.message.length, where).toBeGreaterThan(10);
  expect(error.message, where).not.toMatch(/at .*\.ts:\d+|Exception|stack|undefined|\[object/);
  if (answer.status === 429) expect(answer.headers['retry-after'], where).toMatch(/^\d+$/);
}

function expectError(what: string, answer: Answer, status: number, code: string): void {
  const where = `${what}: ${answer.status} ${answer.text.slice(0, 300)}`;
  expect(answer.status, where).toBe(status);
  expect(answer.json?.error?.code, where).toBe(code);
}

// ---------------------------------------------------------------------------
// Generators of bad values.

/**
 * A long run of text, written short (`⟪x*3000⟫`) so that fast-check's report of a
 * failing sequence stays readable; `send` expands it in the path, headers and body.
 */
const hugeString = (n: number, unit = 'x') => `⟪${unit}*${n}⟫`;
const expand = (text: string) => text.replace(/⟪(.+?)\*(\d+)⟫/g, (_, unit: string, n: string) => unit.repeat(Number(n)));
/** A string from the whole of Unicode, lone surrogates included. */
const anyString = fc.string({ unit: 'binary', maxLength: 40 });
/** Printable text of every script, no lone surrogates, no control characters. */
const text = (max: number) =>
  fc
    .string({ unit: 'grapheme', minLength: 1, maxLength: max })
    // biome-ignore lint/suspicious/noControlCharactersInRegex: a name or description takes none
    .map((s) => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim())
    .filter((s) => s.length >= 1 && s.length <= max);
/** Wrong JSON types for a field that takes a string or a list. */
const wrongType = fc.constantFrom<unknown>(null, 5, -1, 1.5, true, {}, [], [[]], { a: 1 });
/** Numbers that no bounded integer field takes. */
const outOfRange = fc.constantFrom<unknown>(0, -1, 1.5, 10_001, 1e9, 2 ** 53 + 2, '10', null, [], true);
const limitField = fc.constantFrom('max_webhooks', 'rate_per_second', 'burst');
const badResource = fc.oneof(
  fc.constantFrom<unknown>('', ' ', 'no spaces', 'tâche:1', 'a/b', 'a#b', hugeString(201), 'é'.repeat(3), '\u0000', 'x\n'),
  wrongType,
  anyString.filter((s) => !/^[A-Za-z0-9._:-]{1,200}$/.test(s)),
);
const badType = fc.oneof(
  fc.constantFrom<unknown>('', 'Task.changed', 'task..changed', '.task', 'task.', 'task.*', '*', 'sluice.gap', 'webhook.ping', 'a b'),
  fc.constant(`${'a.'.repeat(100)}b`), // 201 characters that match the pattern
  wrongType,
);
const badKey = fc.constantFrom<unknown>('', 'has space', hugeString(201), 'é', 'tab\tkey', 5, null, [], {});
const badIso = fc.constantFrom<unknown>(
  '',
  'yesterday',
  '2026-11-22',
  '2026-11-22T10:00:00', // no offset
  '2026-02-30T10:00:00Z',
  '2026-13-01T10:00:00Z',
  '2026-11-22T25:00:00Z',
  '2026-11-22T10:00:00+99:99',
  '2026-11-22 10:00:00Z',
  '+275760-09-13T00:00:00Z',
  '0000-00-00T00:00Z',
  1_700_000_000_000,
  null,
  {},
);
/** Ids a path may name that are no id of anything (404), or not shaped like one. */
const badPathId = (prefix: string) =>
  fc.constantFrom(
    `${prefix}_0000000000000000000`,
    `${prefix}_zzzzzzzzzzzzzzzzzzz`,
    `${prefix}_`,
    `${prefix}_ABC`,
    prefix,
    'x',
    '%00',
    '%ZZ',
    '%E2%82',
    '%F0%9F%98%80',
    '..',
    hugeString(3000),
    `${prefix}_0000000000000000000%20`,
  );
/** A well-formed `after` of a dead-letter page: a letter key no letter has. */
const DEAD_LETTER_CURSOR = Buffer.from(`${'0'.repeat(15)}#msg_${'0'.repeat(19)}`).toString('base64url');
const unknownQuery = fc.constantFrom('?zz=1', '?dry_run=true', '?limit', '?%ZZ=1', '?a=%ZZ', '?__proto__=1', '?constructor=x');

// ---------------------------------------------------------------------------
// Valid values.

const jsonData = fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' });
interface EventBase {
  readonly resource: string;
  readonly type: string;
  readonly data: unknown;
}
const eventArb: fc.Arbitrary<EventBase> = fc.record({
  resource: fc.constantFrom(...RESOURCES),
  type: fc.constantFrom('task.changed', 'task.comment_added', 'project.renamed'),
  data: jsonData,
});
const webhookTypes = fc.uniqueArray(fc.constantFrom('*', 'task.*', 'task.changed', 'project.renamed', 'a.b.c'), {
  minLength: 1,
  maxLength: 4,
});

interface EventSent {
  readonly resource: string;
  readonly parents?: string[];
  readonly type: string;
  readonly data: unknown;
  readonly id?: string;
}

/** Every valid event names the stream's resource, or is on it. */
function withParent(event: EventBase, id: string | undefined, noisyParents = false): EventSent {
  // Noisy: the parent twice and the resource itself among them, which reach each subscriber once.
  const parents = noisyParents ? [STREAM, event.resource, STREAM] : event.resource !== STREAM ? [STREAM] : undefined;
  return { ...event, ...(parents && { parents }), ...(id !== undefined && { id }) };
}

/** The parents an event is delivered with: each once, not its own resource. */
function deliveredParents(event: EventSent): string[] {
  return [...new Set(event.parents ?? [])].filter((parent) => parent !== event.resource);
}

/** JSON with every object's keys sorted. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Two events are the same (README: a key sent again with it is a duplicate) whatever the order of keys in data, or repeated parents. */
function sameEvent(a: EventSent, b: EventSent): boolean {
  const form = (e: EventSent) => canonical([e.resource, deliveredParents(e), e.type, e.data]);
  return form(a) === form(b);
}

/** The same data with every object's keys in reverse order. */
function reordered(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reordered);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .reverse()
        .map(([k, v]) => [k, reordered(v)]),
    );
  }
  return value;
}

// ---------------------------------------------------------------------------
// The commands and the model.

type Mutation =
  | { kind: 'field'; field: 'resource' | 'parents' | 'type' | 'data' | 'id'; value: unknown }
  | { kind: 'missing'; field: 'resource' | 'type' | 'data' }
  | { kind: 'extra'; name: string }
  | { kind: 'notObject'; value: unknown }
  | { kind: 'rawData'; literal: string }
  | { kind: 'repeatKey' };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('field' as const), field: fc.constant('resource' as const), value: badResource }),
  fc.record({
    kind: fc.constant('field' as const),
    field: fc.constant('parents' as const),
    value: fc.oneof(
      fc.constantFrom<unknown>(
        null,
        'project:1',
        5,
        {},
        [5],
        [null],
        ['bad parent'],
        Array.from({ length: 21 }, (_, i) => `p:${i}`),
      ),
      fc.array(badResource, { minLength: 1, maxLength: 3 }),
    ),
  }),
  fc.record({ kind: fc.constant('field' as const), field: fc.constant('type' as const), value: badType }),
  fc.record({
    kind: fc.constant('field' as const),
    field: fc.constant('data' as const),
    value: fc.constantFrom<unknown>(
      hugeString(64 * 1024),
      JSON.parse(`${'['.repeat(33)}${']'.repeat(33)}`),
      JSON.parse(`${'{"a":'.repeat(33)}1${'}'.repeat(33)}`),
    ),
  }),
  fc.record({ kind: fc.constant('field' as const), field: fc.constant('id' as const), value: badKey }),
  fc.record({ kind: fc.constant('missing' as const), field: fc.constantFrom('resource' as const, 'type' as const, 'data' as const) }),
  fc.record({
    kind: fc.constant('extra' as const),
    name: fc.constantFrom('extra', 'seq', 'created_at', 'ID', '__proto__', 'constructor', ''),
  }),
  fc.record({ kind: fc.constant('notObject' as const), value: fc.constantFrom<unknown>(null, 5, 'event', [], [{}], true) }),
  fc.record({
    kind: fc.constant('rawData' as const),
    literal: fc.constantFrom('1e400', '-1e400', '12345678901234567890', '1.2345678901234567890e19', '12345678901234567890.0'),
  }),
  fc.record({ kind: fc.constant('repeatKey' as const) }),
);

type BatchFault =
  | 'notJson'
  | 'empty'
  | 'array'
  | 'noEvents'
  | 'eventsNotList'
  | 'zeroEvents'
  | 'tooMany'
  | 'extraTop'
  | 'textPlain'
  | 'noContentType'
  | 'jsonPatchType'
  | 'latin1'
  | 'tooLarge'
  | 'deepBody'
  | 'unknownQuery'
  | 'chunkedTooLarge';

type Command =
  | { kind: 'publish'; events: Array<{ event: EventBase; keyed: boolean; noisy: boolean }>; chunked: boolean }
  | {
      kind: 'publishBad';
      events: EventBase[];
      at: number;
      mutation: Mutation;
    }
  | { kind: 'publishBatchBad'; fault: BatchFault; events: EventBase[] }
  | { kind: 'republish'; pick: number; sameData: boolean; noisy: boolean }
  | { kind: 'retryRefused'; pick: number }
  | { kind: 'createWebhook'; body: Record<string, unknown>; verifies: boolean }
  | { kind: 'createWebhookBad'; body: Record<string, unknown>; raw?: string }
  | { kind: 'patchWebhook'; pick: number; body: Record<string, unknown>; newUrl?: boolean; failingUrl?: boolean }
  | { kind: 'patchWebhookBad'; pick: number; body: Record<string, unknown>; raw?: string }
  | { kind: 'deleteWebhook'; pick: number; query?: string }
  | { kind: 'webhookPathBad'; method: string; suffix: string; id: string; body?: unknown }
  | { kind: 'webhookReads'; pick: number; read: string; query: string; body?: unknown }
  | { kind: 'replay'; pick: number; body: unknown; valid: boolean; future?: boolean }
  | { kind: 'stream'; query: string }
  | { kind: 'auth'; route: number; authorization: string | null; adminOnTenant: boolean; head: boolean }
  | { kind: 'noRoute'; method: string; path: string; head: boolean }
  | { kind: 'createTenant'; body: Record<string, unknown> }
  | { kind: 'createTenantBad'; body: unknown; raw?: string }
  | { kind: 'patchTenant'; body: Record<string, unknown> }
  | { kind: 'patchTenantBad'; body: unknown; id?: string }
  | { kind: 'tenantReads'; path: string }
  | { kind: 'rotateKeyBad'; body: unknown; query: string }
  | { kind: 'deleteTenant'; pick: number }
  | { kind: 'extraWebhook'; pick: number; switched: boolean }
  | { kind: 'concurrentCreates'; count: number }
  | { kind: 'concurrentKey'; event: EventBase; count: number }
  | { kind: 'raceDeletePatch'; pick: number }
  | { kind: 'wrongMethod'; route: number; method: string }
  | { kind: 'publishEdge'; edge: 'data' | 'body' | 'hundred'; over: boolean }
  | { kind: 'rotateKey'; pick: number }
  | { kind: 'health'; head: boolean; query: string; authorization: string | null }
  | { kind: 'putSwitch'; scope: 'resource' | 'webhook' | 'tenant'; pick: number; action: 'pause' | 'drop'; reason?: string }
  | { kind: 'putSwitchBad'; body: unknown; notFound: boolean }
  | { kind: 'deleteSwitch'; pick: number; bad?: string; query?: string }
  | { kind: 'adminReads'; path: string; ok: boolean };

const smallEvents = fc.array(eventArb, { minLength: 1, maxLength: 4 });
const pick = fc.nat(20);

const goodWebhookBody = fc.record(
  {
    resource: fc.constantFrom('project:1', 'task:1', 'team:9'),
    types: webhookTypes,
    description: fc.oneof(fc.constant(''), text(500)),
    rate_per_second: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.constant(null)),
  },
  { requiredKeys: ['resource'] },
);

const badWebhookField: fc.Arbitrary<[string, unknown]> = fc.oneof(
  fc.tuple(fc.constant('resource'), badResource),
  fc.tuple(
    fc.constant('url'),
    fc.constantFrom<unknown>(
      '',
      'not a url',
      'ftp://127.0.0.1/x',
      'http://exa mple.com/',
      ' http://127.0.0.1/x',
      'http://user:pw@127.0.0.1/x',
      'http://127.0.0.1/x#frag',
      'http://example..com/',
      `http://127.0.0.1/${hugeString(2001)}`,
      'javascript:alert(1)',
      'http://',
      'http://[::1/',
      5,
      null,
      [],
    ),
  ),
  fc.tuple(
    fc.constant('types'),
    fc.constantFrom<unknown>(
      [],
      null,
      'task.*',
      ['Bad'],
      ['task.**'],
      ['*.task'],
      [5],
      Array.from({ length: 51 }, (_, i) => `t${i}`),
      [`${'a.'.repeat(100)}b`],
    ),
  ),
  fc.tuple(fc.constant('description'), fc.constantFrom<unknown>(5, null, [], hugeString(501), { a: 1 })),
  fc.tuple(fc.constant('rate_per_second'), fc.constantFrom<unknown>(0, -1, 51, 1.5, '10', true, [])),
  fc.tuple(fc.constantFrom('extra', 'status', 'secret', 'id', '__proto__'), fc.constantFrom<unknown>(1, 'x', null)),
);

const badJsonBody = fc.constantFrom(
  '',
  '{',
  'null',
  '[]',
  '"string"',
  '5',
  '{"a":1,}',
  "{'a':1}",
  '{"a":1}{"b":2}',
  '\uFEFF{}',
  '{"a":"\\ud800"', // truncated
  `${hugeString(10_000, '[')}${hugeString(10_000, ']')}`,
  `{"a":${hugeString(100_000, '[')}`,
);

const routeTemplates: ReadonlyArray<{ method: string; path: string; admin: boolean; body: boolean }> = [
  { method: 'POST', path: '/v1/events', admin: false, body: true },
  { method: 'GET', path: `/v1/events?resource=${STREAM}`, admin: false, body: false },
  { method: 'POST', path: '/v1/webhooks', admin: false, body: true },
  { method: 'GET', path: '/v1/webhooks', admin: false, body: false },
  { method: 'GET', path: '/v1/webhooks/{wh}', admin: false, body: false },
  { method: 'PATCH', path: '/v1/webhooks/{wh}', admin: false, body: true },
  { method: 'DELETE', path: '/v1/webhooks/{wh}', admin: false, body: false },
  { method: 'POST', path: '/v1/webhooks/{wh}/rotate-secret', admin: false, body: false },
  { method: 'GET', path: '/v1/webhooks/{wh}/attempts', admin: false, body: false },
  { method: 'POST', path: '/v1/webhooks/{wh}/replay', admin: false, body: true },
  { method: 'GET', path: '/v1/webhooks/{wh}/dead-letters', admin: false, body: false },
  { method: 'POST', path: '/v1/webhooks/{wh}/dead-letters/replay', admin: false, body: false },
  { method: 'POST', path: '/v1/admin/tenants', admin: true, body: true },
  { method: 'GET', path: '/v1/admin/tenants', admin: true, body: false },
  { method: 'GET', path: '/v1/admin/tenants/{ten}', admin: true, body: false },
  { method: 'PATCH', path: '/v1/admin/tenants/{ten}', admin: true, body: true },
  { method: 'DELETE', path: '/v1/admin/tenants/{ten}', admin: true, body: false },
  { method: 'POST', path: '/v1/admin/tenants/{ten}/rotate-key', admin: true, body: false },
  { method: 'PUT', path: '/v1/admin/switches', admin: true, body: true },
  { method: 'GET', path: '/v1/admin/switches', admin: true, body: false },
  { method: 'DELETE', path: '/v1/admin/switches/{sw}', admin: true, body: false },
  { method: 'GET', path: '/v1/admin/queues', admin: true, body: false },
  { method: 'GET', path: '/v1/admin/alarms', admin: true, body: false },
];

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('publish' as const),
      chunked: fc.boolean(),
      events: fc.array(fc.record({ event: eventArb, keyed: fc.boolean(), noisy: fc.boolean() }), { minLength: 1, maxLength: 5 }),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('publishBad' as const), events: smallEvents, at: fc.nat(3), mutation: mutationArb }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('publishBatchBad' as const),
      fault: fc.constantFrom<BatchFault>(
        'notJson',
        'empty',
        'array',
        'noEvents',
        'eventsNotList',
        'zeroEvents',
        'tooMany',
        'extraTop',
        'textPlain',
        'noContentType',
        'jsonPatchType',
        'latin1',
        'tooLarge',
        'deepBody',
        'unknownQuery',
        'chunkedTooLarge',
      ),
      events: smallEvents,
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('republish' as const), pick, sameData: fc.boolean(), noisy: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('retryRefused' as const), pick }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('createWebhook' as const), body: goodWebhookBody, verifies: fc.boolean() }),
  },
  {
    weight: 3,
    arbitrary: fc.oneof(
      fc
        .tuple(goodWebhookBody, fc.array(badWebhookField, { minLength: 1, maxLength: 3 }))
        .map(([body, faults]) => ({ kind: 'createWebhookBad' as const, body: { ...body, url: 'OK', ...Object.fromEntries(faults) } })),
      badJsonBody.map((raw) => ({ kind: 'createWebhookBad' as const, body: {}, raw })),
      fc.constant({ kind: 'createWebhookBad' as const, body: { url: 'OK' } }), // no resource
      fc.constant({ kind: 'createWebhookBad' as const, body: { resource: 'project:1' } }), // no url
      fc.constant({ kind: 'createWebhookBad' as const, body: {}, raw: '{"resource":"project:1","url":"OK","description":"\\udc00"}' }),
    ),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('patchWebhook' as const),
      pick,
      body: fc.record(
        {
          status: fc.constantFrom('active', 'disabled'),
          types: webhookTypes,
          description: fc.oneof(fc.constant(''), text(100)),
          rate_per_second: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.constant(null)),
        },
        { requiredKeys: [] },
      ),
      newUrl: fc.boolean(),
      failingUrl: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.oneof(
      fc
        .tuple(
          pick,
          fc.array(
            badWebhookField.filter(([f]) => f !== 'resource'),
            { minLength: 1, maxLength: 2 },
          ),
          fc.boolean(),
        )
        .map(([p, faults, withGood]) => ({
          kind: 'patchWebhookBad' as const,
          pick: p,
          body: { ...(withGood && { description: 'changed?' }), ...Object.fromEntries(faults) },
        })),
      fc
        .tuple(pick, fc.constantFrom<unknown>('enabled', 'quarantined', '', null, 5, 'ACTIVE'))
        .map(([p, status]) => ({ kind: 'patchWebhookBad' as const, pick: p, body: { status, description: 'changed?' } })),
      fc.tuple(pick, badJsonBody).map(([p, raw]) => ({ kind: 'patchWebhookBad' as const, pick: p, body: {}, raw })),
      pick.map((p) => ({ kind: 'patchWebhookBad' as const, pick: p, body: {} })),
      pick.map((p) => ({ kind: 'patchWebhookBad' as const, pick: p, body: { resource: 'task:2' } })),
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('deleteWebhook' as const), pick, query: fc.option(unknownQuery, { nil: undefined }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('webhookPathBad' as const),
      method: fc.constantFrom('GET', 'PATCH', 'DELETE', 'POST'),
      suffix: fc.constantFrom('', '/rotate-secret', '/attempts', '/replay', '/dead-letters', '/dead-letters/replay'),
      id: badPathId('wh'),
      body: fc.option(fc.constantFrom<unknown>({ description: 'x' }, { since: '2026-01-01T00:00:00Z' }, {}), { nil: undefined }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('webhookReads' as const),
      pick,
      read: fc.constantFrom('list', 'get', 'attempts', 'deadLetters', 'rotate', 'deadLetterReplay'),
      query: fc.oneof(
        fc.constant(''),
        unknownQuery,
        fc.constantFrom(
          '?limit=0',
          '?limit=501',
          '?limit=-1',
          '?limit=1.5',
          '?limit=1e2',
          '?limit=%201',
          '?limit=',
          '?limit=1&limit=2',
          '?limit=99999999999999999999999',
          '?after=wh_x',
          '?after=',
          '?after=%ZZ',
          '?after=AAAA',
          `?after=${DEAD_LETTER_CURSOR}`,
          '?limit=1',
          '?limit=100',
        ),
      ),
      body: fc.option(fc.constantFrom<unknown>({}, { key: 'whsec_abc' }, { secret: 'x' }), { nil: undefined }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.tuple(pick, badIso, fc.option(badIso, { nil: undefined })).map(([p, since, until]) => ({
        kind: 'replay' as const,
        pick: p,
        body: { since, ...(until !== undefined && { until }) },
        valid: false,
      })),
      fc.tuple(pick, badJsonBody).map(([p, raw]) => ({ kind: 'replay' as const, pick: p, body: raw, valid: false })),
      pick.map((p) => ({
        kind: 'replay' as const,
        pick: p,
        body: { since: '2026-01-01T00:00:00Z', until: '2025-01-01T00:00:00Z' },
        valid: false,
      })),
      pick.map((p) => ({ kind: 'replay' as const, pick: p, body: { since: '2026-01-01T00:00:00Z', extra: 1 }, valid: false })),
      // Well-formed, but no window: since is not earlier than now (a 400 once the webhook is found).
      pick.map((p) => ({ kind: 'replay' as const, pick: p, body: { since: '2099-01-01T00:00:00+01:00' }, valid: false, future: true })),
      pick.map((p) => ({ kind: 'replay' as const, pick: p, body: {}, valid: false })),
      pick.map((p) => ({ kind: 'replay' as const, pick: p, body: { since: new Date(Date.now() - 60_000).toISOString() }, valid: true })),
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('stream' as const),
      query: fc.constantFrom(
        '',
        '?resource=',
        '?resource=bad%20one',
        `?resource=${'x'.repeat(201)}`,
        `?resource=${STREAM}&resource=${STREAM}`,
        `?resource=${STREAM}&zz=1`,
        `?resource=${STREAM}&sync=`,
        `?resource=${STREAM}&sync=garbage`,
        `?resource=${STREAM}&sync=%ZZ`,
        `?resource=${STREAM}&sync=${hugeString(5000, 'A')}`,
        `?resource=${STREAM}&sync=eyJ0IjoxfQ.AAAA`,
        `?resource=${STREAM}&sync=a&sync=b`,
        '?resource=%E2%82',
        '?resource=t%C3%A2che',
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('auth' as const),
      route: fc.nat(routeTemplates.length - 1),
      authorization: fc.constantFrom<string | null>(
        null,
        '',
        'Bearer',
        'Bearer ',
        'Bearer sk_',
        'Bearer ak_',
        'Bearer sk_0000000000000000000000000000000000000000',
        'Bearer ak_wrong',
        'Basic dXNlcjpwYXNz',
        'Bearer sk_\u00e9t\u00e9',
        'Bearer  sk_x',
        'bearer sk_x',
        `Bearer sk_${hugeString(4000, 'a')}`,
        'Bearer sk_x, Bearer sk_y',
        'Bearer {other}',
      ),
      adminOnTenant: fc.boolean(),
      head: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('noRoute' as const),
      method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'TRACE'),
      path: fc.constantFrom(
        '/v1',
        '/v1/',
        '/v2/events',
        '/v1/event',
        '/v1/events/',
        '/v1/events/evt_1',
        '/V1/events',
        '/v1/webhooks/wh_0000000000000000000/nope',
        '/v1/admin',
        '/v1/admin/tenant',
        '/v1/admin/switches/sw_0000000000000000000/x',
        '/v1/%ZZ',
        '/v1/webhooks/%2e%2e/%2e%2e/admin/tenants',
        '//v1/events',
        '/v1/webhooks/wh_0000000000000000000/attempts/1',
      ),
      head: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('createTenant' as const),
      body: fc.record(
        {
          name: text(200),
          limits: fc.record(
            {
              max_webhooks: fc.integer({ min: 1, max: 10_000 }),
              rate_per_second: fc.integer({ min: 1, max: 10_000 }),
              burst: fc.integer({ min: 1, max: 5_000 }),
            },
            { requiredKeys: [] },
          ),
        },
        { requiredKeys: ['name'] },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc
        .tuple(
          fc.constantFrom<unknown>(undefined, '', '   ', hugeString(201), 'a\u0000b', 'tab\there', 'line\nbreak', '\u0085', 5, null, []),
          fc.constantFrom<unknown>(
            undefined,
            null,
            5,
            [],
            { max_webhooks: 0 },
            { rate_per_second: 10_001 },
            { burst: 5_001 },
            { burst: 1.5 },
            { max_webhooks: '10' },
            { extra: 1 },
            { max_webhooks: 2 ** 53 + 2 },
          ),
        )
        .map(([name, limits]) => ({
          kind: 'createTenantBad' as const,
          body: { ...(name !== undefined && { name }), ...(limits !== undefined && { limits }) },
        })),
      fc.constant({ kind: 'createTenantBad' as const, body: { name: 'ok', extra: true } }),
      fc
        .tuple(limitField, outOfRange)
        .map(([field, value]) => ({ kind: 'createTenantBad' as const, body: { name: 'fine', limits: { [field]: value } } })),
      badJsonBody.map((raw) => ({ kind: 'createTenantBad' as const, body: {}, raw })),
      fc.constant({ kind: 'createTenantBad' as const, body: {}, raw: '{"name":"\\ud800x"}' }),
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('patchTenant' as const),
      body: fc.record(
        {
          name: text(200),
          limits: fc.record(
            { max_webhooks: fc.integer({ min: 1, max: 6 }), burst: fc.integer({ min: 100, max: 5_000 }) },
            { requiredKeys: [] },
          ),
        },
        { requiredKeys: [] },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc
        .constantFrom<unknown>(
          {},
          { name: '' },
          { name: 'ok', limits: {} },
          { name: 'ok', limits: { max_webhooks: 0 } },
          { name: 'ok', limits: { rate_per_second: -5 } },
          { name: 'fine', limits: { burst: 9_999 } },
          { name: 'fine', limits: null },
          { name: 'fine', extra: 1 },
          { name: 'fine', limits: { max_webhooks: 5, unknown: 1 } },
          { name: null },
          { limits: { max_webhooks: null } },
        )
        .map((body) => ({ kind: 'patchTenantBad' as const, body })),
      badPathId('ten').map((id) => ({ kind: 'patchTenantBad' as const, body: { name: 'fine' }, id })),
      fc.tuple(limitField, outOfRange, fc.boolean()).map(([field, value, named]) => ({
        kind: 'patchTenantBad' as const,
        body: { ...(named && { name: 'fine' }), limits: { max_webhooks: 2, [field]: value } },
      })),
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('tenantReads' as const),
      path: fc.oneof(
        badPathId('ten').map((id) => `/v1/admin/tenants/${id}`),
        fc.constantFrom(
          '/v1/admin/tenants?limit=0',
          '/v1/admin/tenants?limit=101',
          '/v1/admin/tenants?after=x',
          '/v1/admin/tenants?after=ten_0000000000000000000',
          '/v1/admin/tenants?zz=1',
          '/v1/admin/tenants?limit=5',
        ),
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('rotateKeyBad' as const),
      body: fc.constantFrom<unknown>({ api_key: 'sk_mine' }, { a: 1 }, '{', '[]'),
      query: fc.constantFrom('', '?zz=1'),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deleteTenant' as const), pick }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extraWebhook' as const), pick, switched: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('concurrentCreates' as const), count: fc.integer({ min: 2, max: 4 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('concurrentKey' as const), event: eventArb, count: fc.integer({ min: 2, max: 4 }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('raceDeletePatch' as const), pick }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('wrongMethod' as const),
      route: fc.nat(routeTemplates.length - 1),
      method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('publishEdge' as const),
      edge: fc.constantFrom('data' as const, 'body' as const, 'hundred' as const),
      over: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rotateKey' as const), pick }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('health' as const),
      head: fc.boolean(),
      query: fc.constantFrom('', '?cache=123', '?%ZZ', '?a=1&a=2'),
      authorization: fc.constantFrom<string | null>(null, 'Bearer sk_nope', 'garbage'),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        kind: fc.constant('putSwitch' as const),
        scope: fc.constantFrom('resource' as const, 'webhook' as const, 'tenant' as const),
        pick,
        action: fc.constantFrom('pause' as const, 'drop' as const),
        reason: fc.oneof(text(100), fc.constant('')),
      },
      { requiredKeys: ['kind', 'scope', 'pick', 'action'] },
    ),
  },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc
        .constantFrom<unknown>(
          {},
          { scope: 'global', tenant: '{T}', action: 'pause' },
          { scope: 'tenant', tenant: '{T}', action: 'stop' },
          { scope: 'tenant', tenant: '{T}', target: 'x', action: 'pause' },
          { scope: 'resource', tenant: '{T}', action: 'pause' },
          { scope: 'resource', tenant: '{T}', target: 'bad target', action: 'pause' },
          { scope: 'webhook', tenant: '{T}', target: 'task:1', action: 'pause' },
          { scope: 'resource', tenant: 'ten_x', target: 'other:1', action: 'pause' },
          { scope: 'resource', tenant: '{T}', target: 'other:1', action: 'pause', reason: hugeString(501) },
          { scope: 'resource', tenant: '{T}', target: 'other:1', action: 'pause', reason: 5 },
          { scope: 'resource', tenant: '{T}', target: 'other:1', action: 'pause', extra: 1 },
          { scope: ['tenant'], tenant: '{T}', action: 'pause' },
          '{"scope":"resource","tenant":"{T}","target":"other:1","action":"pause","reason":"\\ud800"}',
          'not json',
        )
        .map((body) => ({ kind: 'putSwitchBad' as const, body, notFound: false })),
      fc
        .constantFrom<unknown>(
          { scope: 'tenant', tenant: 'ten_0000000000000000000', action: 'pause' },
          { scope: 'webhook', tenant: '{T}', target: 'wh_0000000000000000000', action: 'pause' },
          { scope: 'webhook', tenant: '{T}', target: '{OTHERWH}', action: 'drop' },
        )
        .map((body) => ({ kind: 'putSwitchBad' as const, body, notFound: true })),
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        kind: fc.constant('deleteSwitch' as const),
        pick,
        bad: fc.option(badPathId('sw'), { nil: undefined }),
        query: fc.option(unknownQuery, { nil: undefined }),
      },
      { requiredKeys: ['kind', 'pick'] },
    ),
  },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc
        .constantFrom(
          '/v1/admin/queues?limit=0',
          '/v1/admin/queues?limit=101',
          '/v1/admin/queues?limit=x',
          '/v1/admin/queues?zz=1',
          '/v1/admin/switches?tenant=ten_0000000000000000000',
          '/v1/admin/alarms?x=1',
        )
        .map((path) => ({ kind: 'adminReads' as const, path, ok: false })),
      fc
        .constantFrom('/v1/admin/queues', '/v1/admin/queues?limit=100', '/v1/admin/switches', '/v1/admin/alarms')
        .map((path) => ({ kind: 'adminReads' as const, path, ok: true })),
    ),
  },
);

// ---------------------------------------------------------------------------
// Running one sequence against the model.

interface WebhookModel {
  id: string;
  resource: string;
  url: string;
  types: string[];
  description: string;
  status: 'active' | 'disabled';
  rate_per_second: number | null;
}

interface SwitchModel {
  id: string;
  scope: string;
  tenant: string;
  target?: string;
  action: string;
  reason: string;
}

interface TenantModel {
  id: string;
  key: string;
  name: string;
  limits: { max_webhooks: number; rate_per_second: number; burst: number };
}

interface Run {
  readonly n: number;
  readonly tenant: TenantModel;
  readonly extraTenants: TenantModel[];
  readonly webhooks: WebhookModel[];
  readonly switches: Map<string, SwitchModel>;
  /** Idempotency key → the event sent with it and its evt_ id. */
  readonly keys: Map<string, { event: EventSent; id: string }>;
  /** Idempotency keys sent only in refused requests, with the valid event each stood for. */
  readonly refused: Map<string, EventSent>;
  /** The events accepted, by evt_ id: exactly what the run's stream must hold. */
  readonly accepted: Map<string, EventSent>;
  readonly sync: string;
  /** When each verification ping (a create or a URL change that passed validation) was asked for. */
  readonly pings: number[];
  keyCount: number;
  webhookCount: number;
  readonly log: string[];
}

/** Every run's tenant and what its stream must hold, for the check after all runs. */
const runs: Run[] = [];
/** Every tenant made (and not deleted), by any run. */
const liveTenants = new Map<string, TenantModel>();
let runCount = 0;
/** Keys a call was made with: API Gateway may go on taking them for a minute after a rotation. */
const usedKeys = new Set<string>();
const DEFAULT_LIMITS = { max_webhooks: 100, rate_per_second: 500, burst: 1000 };

function freshKey(run: Run): string {
  return `k${run.n}-${run.keyCount++}`;
}

function webhookUrl(run: Run, verifies: boolean): string {
  return `${receiver.url}/${verifies ? 'ok' : 'fail'}/r${run.n}-${run.webhookCount++}`;
}

/** A ping may be refused when the tenant's 20 per 10 s are used (README: 429 rate_limited). */
function pingBudgetUsed(run: Run): boolean {
  const now = Date.now();
  return run.pings.filter((at) => now - at < 11_000).length >= 20;
}

function pickOf<T>(list: readonly T[], n: number): T | undefined {
  return list.length === 0 ? undefined : list[n % list.length];
}

/** How many answers of each kind, by command and status (printed with FUZZ_STATS=1). */
const stats = new Map<string, number>();

async function call(run: Run, what: string, method: string, path: string, request: Request = {}): Promise<Answer> {
  const answer = await send(method, path, request);
  const kind = `${what} → ${answer.status}${answer.json?.error ? ` ${answer.json.error.code}` : ''}`;
  stats.set(kind, (stats.get(kind) ?? 0) + 1);
  run.log.push(`${method} ${path.slice(0, 120)} → ${answer.status} ${answer.text.slice(0, 160)}`);
  checkAnswer(`${what} (${method} ${path.slice(0, 120)})`, method, answer);
  return answer;
}

/** A publish the model says is valid: each event accepted, a duplicate of its key's first, or refused for a key reused with another event. */
async function publishValid(run: Run, events: EventSent[], chunked = false): Promise<void> {
  const answer = await call(run, 'publish', 'POST', '/v1/events', { key: run.tenant.key, json: { events }, chunked });
  expect(answer.status, answer.text).toBe(202);
  expect(answer.json.events).toHaveLength(events.length);
  events.forEach((event, i) => {
    const result = answer.json.events[i];
    const before = event.id === undefined ? undefined : run.keys.get(event.id);
    if (before && sameEvent(before.event, event)) {
      expect(result, `event ${i}`).toEqual({ id: before.id, status: 'duplicate' });
    } else if (before) {
      expect(result.status, `event ${i}`).toBe('rejected');
      expect(result.error.code, `event ${i}`).toBe('invalid_request');
    } else {
      expect(result, `event ${i}: ${JSON.stringify(event).slice(0, 200)}`).toEqual({
        id: expect.stringMatching(/^evt_/),
        status: 'accepted',
      });
      run.accepted.set(result.id, event);
      if (event.id !== undefined) {
        run.keys.set(event.id, { event, id: result.id });
        run.refused.delete(event.id);
      }
    }
  });
}

function mutate(events: EventSent[], at: number, mutation: Mutation): { body: unknown; raw?: string } {
  const list: unknown[] = events.map((e) => ({ ...e }));
  const i = at % list.length;
  const target = list[i] as Record<string, unknown>;
  switch (mutation.kind) {
    case 'field':
      target[mutation.field] = mutation.value;
      break;
    case 'missing':
      delete target[mutation.field];
      break;
    case 'extra':
      if (mutation.name === '__proto__') {
        const json = JSON.stringify({ events: list });
        return { body: undefined, raw: json.replace('{"resource"', '{"__proto__":{"x":1},"resource"') };
      }
      target[mutation.name] = 1;
      break;
    case 'notObject':
      list[i] = mutation.value;
      break;
    case 'rawData': {
      target.data = '__RAW_NUMBER__';
      return { body: undefined, raw: JSON.stringify({ events: list }).replace('"__RAW_NUMBER__"', mutation.literal) };
    }
    case 'repeatKey': {
      const other = list.find((e, j) => j !== i && typeof (e as EventSent).id === 'string') as EventSent | undefined;
      target.id = other?.id ?? 'same-key';
      if (!other) list.push({ ...target });
      break;
    }
  }
  return { body: { events: list } };
}

async function expectRefused(run: Run, what: string, answer: Answer, status: number, code: string, sent: EventSent[]): Promise<void> {
  expectError(what, answer, status, code);
  for (const event of sent) if (event.id !== undefined && !run.keys.has(event.id)) run.refused.set(event.id, event);
}

function keyed(run: Run, events: EventBase[]): EventSent[] {
  return events.map((e) => withParent(e, freshKey(run)));
}

async function execute(run: Run, command: Command): Promise<void> {
  const T = run.tenant;
  switch (command.kind) {
    case 'publish': {
      await publishValid(
        run,
        command.events.map(({ event, keyed, noisy }) => withParent(event, keyed ? freshKey(run) : undefined, noisy)),
        command.chunked,
      );
      return;
    }
    case 'publishBad': {
      const events = keyed(run, command.events);
      const { body, raw } = mutate(events, command.at, command.mutation);
      const answer = await call(run, 'publish bad event', 'POST', '/v1/events', { key: T.key, ...(raw ? { raw } : { json: body }) });
      await expectRefused(run, `publish with ${JSON.stringify(command.mutation).slice(0, 200)}`, answer, 400, 'invalid_request', events);
      return;
    }
    case 'publishBatchBad': {
      const events = keyed(run, command.events);
      const good = JSON.stringify({ events });
      const requests: Record<BatchFault, [Request, number, string, string?]> = {
        notJson: [{ raw: good.slice(0, -1) }, 400, 'invalid_request'],
        empty: [{ raw: '' }, 400, 'invalid_request'],
        array: [{ raw: JSON.stringify(events) }, 400, 'invalid_request'],
        noEvents: [{ json: { event: events } }, 400, 'invalid_request'],
        eventsNotList: [{ json: { events: events[0] } }, 400, 'invalid_request'],
        zeroEvents: [{ json: { events: [] } }, 400, 'invalid_request'],
        tooMany: [{ json: { events: Array.from({ length: 101 }, (_, i) => events[i % events.length]) } }, 400, 'invalid_request'],
        extraTop: [{ json: { events, dry_run: true } }, 400, 'invalid_request'],
        textPlain: [{ raw: good, contentType: 'text/plain' }, 400, 'invalid_request'],
        noContentType: [{ raw: good, contentType: null }, 400, 'invalid_request'],
        jsonPatchType: [{ raw: good, contentType: 'application/json-patch+json' }, 400, 'invalid_request'],
        latin1: [
          { raw: Buffer.concat([Buffer.from(good.slice(0, -1)), Buffer.from([0x2c, 0x22, 0xe9, 0x22, 0x3a, 0x31, 0x7d])]) },
          400,
          'invalid_request',
        ],
        tooLarge: [
          { raw: good.replace(/\]\}$/, `,${JSON.stringify({ ...events[0], id: undefined, data: hugeString(1_100_000) })}]}`) },
          413,
          'payload_too_large',
        ],
        deepBody: [{ raw: `{"events":${'['.repeat(50_000)}${']'.repeat(50_000)}}` }, 400, 'invalid_request'],
        unknownQuery: [{ json: { events } }, 400, 'invalid_request', '?zz=1'],
        chunkedTooLarge: [
          { raw: `{"events":[{"resource":"task:1","type":"a","data":"${hugeString(1_100_000)}"}]}`, chunked: true },
          413,
          'payload_too_large',
        ],
      };
      const [request, status, code, query = ''] = requests[command.fault];
      const answer = await call(run, `publish ${command.fault}`, 'POST', `/v1/events${query}`, { key: T.key, ...request });
      await expectRefused(run, `publish ${command.fault}`, answer, status, code, events);
      return;
    }
    case 'publishEdge': {
      // Exactly at a limit is accepted; one byte (or one event) past it is refused, and stores nothing.
      const MIB = 1024 * 1024;
      let events: EventSent[];
      if (command.edge === 'data') {
        // 64 KiB serialized, in 3-byte characters: the limit is bytes, not characters.
        const euros = '€'.repeat(21_000);
        const fill = 64 * 1024 - 2 - Buffer.byteLength(euros) + (command.over ? 1 : 0);
        events = [{ resource: 'task:1', parents: [STREAM], type: 'task.changed', data: euros + 'x'.repeat(fill) }];
      } else if (command.edge === 'body') {
        const big = (data: string): EventSent => ({ resource: STREAM, type: 'project.renamed', data });
        events = Array.from({ length: 17 }, () => big('y'.repeat(60_000)));
        const size = Buffer.byteLength(JSON.stringify({ events: [...events, big('')] }));
        events.push(big('z'.repeat(MIB - size + (command.over ? 1 : 0))));
      } else {
        events = Array.from({ length: command.over ? 101 : 100 }, (_, i) =>
          withParent({ resource: RESOURCES[i % RESOURCES.length] as string, type: 'task.changed', data: i }, undefined),
        );
      }
      if (!command.over) return publishValid(run, events);
      const answer = await call(run, `publish past ${command.edge}`, 'POST', '/v1/events', { key: T.key, json: { events } });
      return expectError(
        `publish past ${command.edge}`,
        answer,
        command.edge === 'body' ? 413 : 400,
        command.edge === 'body' ? 'payload_too_large' : 'invalid_request',
      );
    }
    case 'wrongMethod': {
      // A route's path with a method it does not take: no such route (404), with the right key.
      const route = routeTemplates[command.route] as (typeof routeTemplates)[number];
      const pattern = route.path.split('?')[0] as string;
      if (routeTemplates.some((r) => r.method === command.method && r.path.split('?')[0] === pattern)) return;
      const path = pattern
        .replace('{wh}', run.webhooks[0]?.id ?? otherWebhook)
        .replace('{ten}', T.id)
        .replace('{sw}', 'sw_0000000000000000000');
      const key = route.admin ? sandbox.adminKey : T.key;
      const answer = await call(run, 'wrong method', command.method, path, { key, ...(command.method !== 'GET' && { json: {} }) });
      return expectError(`${command.method} ${pattern}`, answer, 404, 'not_found');
    }
    case 'concurrentCreates': {
      // Creates at once, near the tenant's max_webhooks: never more webhooks than places.
      const free = Math.max(0, T.limits.max_webhooks - run.webhooks.length);
      const bodies = Array.from({ length: command.count }, () => ({ resource: 'team:9', url: webhookUrl(run, true) }));
      const answers = await Promise.all(
        bodies.map((body) => call(run, 'create at once', 'POST', '/v1/webhooks', { key: T.key, json: body })),
      );
      for (const _ of bodies) run.pings.push(Date.now());
      const created = answers.filter((a) => a.status === 201);
      const full = answers.filter((a) => a.json?.error?.code === 'limit_exceeded').length;
      const throttled = answers.filter((a) => a.json?.error?.code === 'rate_limited').length;
      expect(created.length + full + throttled, 'every answer 201, 422 limit_exceeded or 429 rate_limited').toBe(command.count);
      expect(created.length).toBeLessThanOrEqual(free);
      // A create refused for the ping budget held a place a moment: others may have found the count full meanwhile.
      if (throttled === 0) expect(created.length).toBe(Math.min(free, command.count));
      for (const answer of created) {
        const body = bodies.find((b) => b.url === answer.json.url) as { resource: string; url: string };
        run.webhooks.push({ id: answer.json.id, ...body, types: ['*'], description: '', status: 'active', rate_per_second: null });
      }
      // Listed oldest first: ids are time-ordered.
      run.webhooks.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return;
    }
    case 'concurrentKey': {
      // One key sent by several requests at once: one event accepted, the others duplicates of it or told to retry (conflict).
      const event = withParent(command.event, freshKey(run));
      const answers = await Promise.all(
        Array.from({ length: command.count }, () =>
          call(run, 'same key at once', 'POST', '/v1/events', { key: T.key, json: { events: [event] } }),
        ),
      );
      const results = answers.map((a) => {
        expect(a.status, a.text).toBe(202);
        return a.json.events[0];
      });
      const accepted = results.filter((r) => r.status === 'accepted');
      expect(accepted, JSON.stringify(results)).toHaveLength(1);
      const id = accepted[0].id;
      for (const r of results) {
        if (r.status === 'accepted') continue;
        if (r.status === 'duplicate') expect(r.id).toBe(id);
        else expect(r, JSON.stringify(results)).toMatchObject({ status: 'rejected', error: { code: 'conflict' } });
      }
      run.accepted.set(id, event);
      run.keys.set(event.id as string, { event, id });
      return;
    }
    case 'raceDeletePatch': {
      const webhook = pickOf(run.webhooks, command.pick);
      if (!webhook) return;
      const [deleted, patched] = await Promise.all([
        call(run, 'delete racing a patch', 'DELETE', `/v1/webhooks/${webhook.id}`, { key: T.key }),
        call(run, 'patch racing a delete', 'PATCH', `/v1/webhooks/${webhook.id}`, {
          key: T.key,
          json: { description: 'raced', types: ['task.*'] },
        }),
      ]);
      expect(deleted.status, deleted.text).toBe(204);
      expect([200, 404], patched.text).toContain(patched.status);
      run.webhooks.splice(run.webhooks.indexOf(webhook), 1);
      for (const [id, sw] of run.switches) if (sw.scope === 'webhook' && sw.target === webhook.id) run.switches.delete(id);
      // Gone for good: no patch brought back a piece of it.
      expectError(
        'the deleted webhook',
        await call(run, 'get deleted', 'GET', `/v1/webhooks/${webhook.id}`, { key: T.key }),
        404,
        'not_found',
      );
      return;
    }
    case 'extraWebhook': {
      // Something for a tenant's deletion to clear away: a webhook, maybe switched.
      const tenant = pickOf(run.extraTenants, command.pick);
      if (!tenant || pingBudgetUsed(run) || tenant.limits.max_webhooks < 1) return;
      usedKeys.add(tenant.key);
      const url = webhookUrl(run, true);
      const created = await call(run, 'extra webhook', 'POST', '/v1/webhooks', { key: tenant.key, json: { resource: 'x:1', url } });
      if (created.status === 422 || created.status === 429) return;
      expect(created.status, created.text).toBe(201);
      if (!command.switched) return;
      const body = { scope: 'webhook', tenant: tenant.id, target: created.json.id, action: 'pause' };
      const set = await call(run, 'put switch', 'PUT', '/v1/admin/switches', { key: sandbox.adminKey, json: body });
      expect(set.status, set.text).toBe(200);
      run.switches.set(set.json.id, { ...body, reason: '', id: set.json.id });
      return;
    }
    case 'republish': {
      const entries = [...run.keys.values()];
      const before = pickOf(entries, command.pick);
      if (!before) return;
      // The same event with its data's keys in another order (and noisy parents) is the same event.
      const same = { ...before.event, data: reordered(before.event.data) };
      const resent = command.noisy ? { ...same, parents: [STREAM, before.event.resource, STREAM] } : same;
      const event = command.sameData ? resent : { ...before.event, data: { changed: run.keyCount } };
      await publishValid(run, [event]);
      return;
    }
    case 'retryRefused': {
      const event = pickOf([...run.refused.values()], command.pick);
      if (!event) return;
      await publishValid(run, [event]);
      return;
    }
    case 'createWebhook': {
      const url = webhookUrl(run, command.verifies);
      const body: Record<string, unknown> = { ...command.body, url };
      const mayPing = run.webhooks.length < T.limits.max_webhooks;
      const busy = pingBudgetUsed(run);
      const answer = await call(run, 'create webhook', 'POST', '/v1/webhooks', { key: T.key, json: body });
      if (!mayPing) return expectError('create past max_webhooks', answer, 422, 'limit_exceeded');
      run.pings.push(Date.now());
      if (answer.status === 429 && busy) return expectError('create', answer, 429, 'rate_limited');
      if (!command.verifies) return expectError('create failing url', answer, 422, 'endpoint_verification_failed');
      expect(answer.status, answer.text).toBe(201);
      const model: WebhookModel = {
        id: answer.json.id,
        resource: body.resource as string,
        url,
        types: (body.types as string[] | undefined) ?? ['*'],
        description: (body.description as string | undefined) ?? '',
        status: 'active',
        rate_per_second: (body.rate_per_second as number | null | undefined) ?? null,
      };
      expect(answer.json).toMatchObject({ ...model, secret: expect.stringMatching(/^whsec_/) });
      run.webhooks.push(model);
      return;
    }
    case 'createWebhookBad': {
      const url = webhookUrl(run, true);
      const raw = command.raw?.replace('"OK"', JSON.stringify(url));
      const body = Object.fromEntries(Object.entries(command.body).map(([k, v]) => [k, v === 'OK' ? url : v]));
      const answer = await call(run, 'create bad webhook', 'POST', '/v1/webhooks', {
        key: T.key,
        ...(raw !== undefined ? { raw } : { json: body }),
      });
      expectError(`create webhook ${JSON.stringify(command).slice(0, 300)}`, answer, 400, 'invalid_request');
      return;
    }
    case 'patchWebhook': {
      const webhook = pickOf(run.webhooks, command.pick);
      if (!webhook) return;
      const body: Record<string, unknown> = { ...command.body };
      if (command.newUrl) body.url = webhookUrl(run, !command.failingUrl);
      if (Object.keys(body).length === 0) body.description = 'patched';
      const pings = body.url !== undefined;
      const busy = pingBudgetUsed(run);
      const answer = await call(run, 'patch webhook', 'PATCH', `/v1/webhooks/${webhook.id}`, { key: T.key, json: body });
      if (pings) run.pings.push(Date.now());
      if (pings && answer.status === 429 && busy) return expectError('patch', answer, 429, 'rate_limited');
      if (pings && command.failingUrl) return expectError('patch to failing url', answer, 422, 'endpoint_verification_failed');
      expect(answer.status, answer.text).toBe(200);
      Object.assign(webhook, body);
      expect(answer.json).toMatchObject(webhook);
      return;
    }
    case 'patchWebhookBad': {
      const webhook = pickOf(run.webhooks, command.pick);
      const id = webhook?.id ?? 'wh_0000000000000000000';
      const url = webhookUrl(run, true);
      const body = Object.fromEntries(Object.entries(command.body).map(([k, v]) => [k, v === 'OK' ? url : v]));
      const answer = await call(run, 'patch bad webhook', 'PATCH', `/v1/webhooks/${id}`, {
        key: T.key,
        ...(command.raw !== undefined ? { raw: command.raw } : { json: body }),
      });
      expectError(`patch webhook ${JSON.stringify(command).slice(0, 300)}`, answer, 400, 'invalid_request');
      return;
    }
    case 'deleteWebhook': {
      const webhook = pickOf(run.webhooks, command.pick);
      const id = webhook?.id ?? 'wh_0000000000000000000';
      const answer = await call(run, 'delete webhook', 'DELETE', `/v1/webhooks/${id}${command.query ?? ''}`, { key: T.key });
      if (command.query) return expectError('delete with query', answer, 400, 'invalid_request');
      if (!webhook) return expectError('delete unknown', answer, 404, 'not_found');
      expect(answer.status, answer.text).toBe(204);
      run.webhooks.splice(run.webhooks.indexOf(webhook), 1);
      // Its kill switch goes with it.
      for (const [id, sw] of run.switches) if (sw.scope === 'webhook' && sw.target === webhook.id) run.switches.delete(id);
      return;
    }
    case 'webhookPathBad': {
      const path = `/v1/webhooks/${command.id}${command.suffix}`;
      const answer = await call(run, 'bad webhook path', command.method, path, {
        key: T.key,
        ...(command.body !== undefined && { json: command.body }),
      });
      // No such webhook, or no such route (404); or a body the route does not take, judged before the id (400).
      expect([400, 404], answer.text).toContain(answer.status);
      return;
    }
    case 'webhookReads': {
      const webhook = pickOf(run.webhooks, command.pick);
      // Another tenant's webhook is no webhook of this one's.
      const id = webhook?.id ?? otherWebhook;
      const paths: Record<string, [string, string, string[], boolean]> = {
        list: ['GET', '/v1/webhooks', ['limit', 'after'], false],
        get: ['GET', `/v1/webhooks/${id}`, [], false],
        attempts: ['GET', `/v1/webhooks/${id}/attempts`, ['limit'], false],
        deadLetters: ['GET', `/v1/webhooks/${id}/dead-letters`, ['limit', 'after'], false],
        rotate: ['POST', `/v1/webhooks/${id}/rotate-secret`, [], true],
        deadLetterReplay: ['POST', `/v1/webhooks/${id}/dead-letters/replay`, [], true],
      };
      const [method, path, takes, takesBody] = paths[command.read] as [string, string, string[], boolean];
      const body = takesBody ? command.body : undefined;
      const answer = await call(run, `webhook ${command.read}`, method, `${path}${command.query}`, {
        key: T.key,
        ...(body !== undefined && { json: body }),
      });
      const query = new URLSearchParams(command.query);
      const names = [...query.keys()];
      const limit = query.getAll('limit');
      const after = query.getAll('after');
      const badQuery =
        names.some((n) => !takes.includes(n)) ||
        (limit.length > 0 && (limit.length > 1 || !['1', '100'].includes(limit[0] as string))) ||
        (after.length > 0 && (command.read !== 'deadLetters' || after[0] !== DEAD_LETTER_CURSOR));
      const badBody = body !== undefined && Object.keys(body as object).length > 0;
      const what = `${command.read}${command.query} ${JSON.stringify(body)}`;
      if (command.read !== 'list' && !webhook && badQuery) return expect([400, 404], what).toContain(answer.status);
      if (badQuery || badBody) return expectError(what, answer, 400, 'invalid_request');
      if (command.read !== 'list' && !webhook) return expectError(`${what} of another tenant's webhook`, answer, 404, 'not_found');
      if (command.read === 'deadLetterReplay') return expect([202, 429], what).toContain(answer.status);
      expect(answer.status, `${what}: ${answer.text}`).toBe(200);
      return;
    }
    case 'replay': {
      const webhook = pickOf(run.webhooks, command.pick);
      const id = webhook?.id ?? otherWebhook;
      const request: Request = typeof command.body === 'string' ? { raw: command.body } : { json: command.body };
      const answer = await call(run, 'replay', 'POST', `/v1/webhooks/${id}/replay`, { key: T.key, ...request });
      if (command.future && !webhook) return expectError('replay of another tenant', answer, 404, 'not_found');
      if (!command.valid) return expectError(`replay ${JSON.stringify(command.body).slice(0, 200)}`, answer, 400, 'invalid_request');
      if (!webhook) return expectError('replay of another tenant', answer, 404, 'not_found');
      if (answer.status === 429) return expectError('replay', answer, 429, 'rate_limited');
      expect(answer.status, answer.text).toBe(202);
      expect(answer.json).toEqual({ events: expect.any(Number) });
      return;
    }
    case 'stream': {
      const answer = await call(run, 'stream', 'GET', `/v1/events${command.query}`, { key: T.key });
      const params = new URLSearchParams(command.query);
      const wellFormed =
        params.getAll('resource').length === 1 &&
        params.get('resource') === STREAM &&
        params.getAll('sync').length === 1 &&
        [...params.keys()].every((k) => k === 'resource' || k === 'sync');
      if (!wellFormed) return expectError(`stream${command.query}`, answer, 400, 'invalid_request');
      // A token that is not this stream's: 412 with a fresh one (which starts another stream; ours keeps its own).
      expect(answer.status, answer.text).toBe(412);
      expect(answer.json.sync).toEqual(expect.any(String));
      return;
    }
    case 'auth': {
      const route = routeTemplates[command.route] as (typeof routeTemplates)[number];
      const path = route.path.replace('{wh}', otherWebhook).replace('{ten}', other.id).replace('{sw}', 'sw_0000000000000000000');
      const body = route.body ? { json: { name: 'should-not-exist', events: [] } } : {};
      if (command.adminOnTenant) {
        // A valid key on the other kind's routes: 403 before anything else is looked at.
        const key = route.admin ? T.key : sandbox.adminKey;
        const answer = await call(run, 'wrong kind of key', route.method, `${path}`, { key, ...body });
        return expectError(`${route.method} ${route.path} with the ${route.admin ? 'tenant' : 'admin'} key`, answer, 403, 'forbidden');
      }
      const authorization = command.authorization?.replace('{other}', `${other.key}x`) ?? null;
      // HEAD is answered only on the health check: elsewhere a 401 without a key, before anything else.
      const method = command.head ? 'HEAD' : route.method;
      const answer = await call(run, 'bad key', method, path, { authorization, ...(method !== 'HEAD' && body) });
      if (method === 'HEAD') return expect(answer.status, `HEAD ${route.path}`).toBe(401);
      return expectError(`${route.method} ${route.path} with ${JSON.stringify(authorization?.slice(0, 40))}`, answer, 401, 'unauthorized');
    }
    case 'noRoute': {
      const method = command.head ? 'HEAD' : command.method;
      const key = command.path.includes('admin') ? sandbox.adminKey : T.key;
      const answer = await call(run, 'no route', method, command.path, { key });
      expect(answer.status, answer.text).toBe(404);
      if (method !== 'HEAD') expect(answer.json.error.code).toBe('not_found');
      return;
    }
    case 'createTenant': {
      const answer = await call(run, 'create tenant', 'POST', '/v1/admin/tenants', { key: sandbox.adminKey, json: command.body });
      expect(answer.status, answer.text).toBe(201);
      const model: TenantModel = {
        id: answer.json.id,
        key: answer.json.api_key,
        name: (command.body.name as string).trim(),
        limits: { ...DEFAULT_LIMITS, ...(command.body.limits as object | undefined) },
      };
      expect(answer.json).toMatchObject({ id: model.id, name: model.name, limits: model.limits, api_key: expect.stringMatching(/^sk_/) });
      run.extraTenants.push(model);
      liveTenants.set(model.id, model);
      return;
    }
    case 'createTenantBad': {
      const answer = await call(run, 'create bad tenant', 'POST', '/v1/admin/tenants', {
        key: sandbox.adminKey,
        ...(command.raw !== undefined ? { raw: command.raw } : { json: command.body }),
      });
      return expectError(`create tenant ${JSON.stringify(command).slice(0, 200)}`, answer, 400, 'invalid_request');
    }
    case 'patchTenant': {
      const body: Record<string, unknown> = { ...command.body };
      // Limits with none of the three is a 400 (patchTenantBad sends it).
      if (body.limits !== undefined && Object.keys(body.limits as object).length === 0) delete body.limits;
      if (Object.keys(body).length === 0) body.name = 'renamed';
      const answer = await call(run, 'patch tenant', 'PATCH', `/v1/admin/tenants/${T.id}`, { key: sandbox.adminKey, json: body });
      expect(answer.status, answer.text).toBe(200);
      if (body.name !== undefined) T.name = (body.name as string).trim();
      Object.assign(T.limits, body.limits);
      expect(answer.json).toMatchObject({ id: T.id, name: T.name, limits: T.limits });
      return;
    }
    case 'patchTenantBad': {
      const id = command.id ?? T.id;
      const answer = await call(run, 'patch bad tenant', 'PATCH', `/v1/admin/tenants/${id}`, { key: sandbox.adminKey, json: command.body });
      if (command.id !== undefined) return expectError('patch unknown tenant', answer, 404, 'not_found');
      return expectError(`patch tenant ${JSON.stringify(command.body)}`, answer, 400, 'invalid_request');
    }
    case 'tenantReads': {
      const answer = await call(run, 'tenant read', 'GET', command.path, { key: sandbox.adminKey });
      if (command.path.endsWith('limit=5') || (command.path.endsWith('ten_0000000000000000000') && command.path.includes('after'))) {
        expect(answer.status, answer.text).toBe(200);
      } else if (command.path.includes('?')) {
        expectError(command.path, answer, 400, 'invalid_request');
      } else {
        expectError(command.path.slice(0, 100), answer, 404, 'not_found');
      }
      return;
    }
    case 'rotateKeyBad': {
      const request = typeof command.body === 'string' ? { raw: command.body } : { json: command.body };
      const answer = await call(run, 'rotate key', 'POST', `/v1/admin/tenants/${T.id}/rotate-key${command.query}`, {
        key: sandbox.adminKey,
        ...request,
      });
      expectError('rotate key with a body', answer, 400, 'invalid_request');
      return;
    }
    case 'rotateKey': {
      const tenant = pickOf(run.extraTenants, command.pick);
      if (!tenant) return;
      const answer = await call(run, 'rotate key', 'POST', `/v1/admin/tenants/${tenant.id}/rotate-key`, { key: sandbox.adminKey });
      expect(answer.status, answer.text).toBe(200);
      expect(answer.json).toEqual({ id: tenant.id, api_key: expect.stringMatching(/^sk_/) });
      // The old key stops at once, unless API Gateway keeps an authorizer's answer for it
      // (README: up to 60 s after the rotation, for a key used in the last minute); the new one works.
      const old = await call(run, 'old key', 'GET', '/v1/webhooks', { key: tenant.key });
      if (usedKeys.has(tenant.key)) expect([200, 401]).toContain(old.status);
      else expectError('the rotated key', old, 401, 'unauthorized');
      tenant.key = answer.json.api_key;
      usedKeys.add(tenant.key);
      expect((await call(run, 'new key', 'GET', '/v1/webhooks', { key: tenant.key })).status).toBe(200);
      return;
    }
    case 'health': {
      const method = command.head ? 'HEAD' : 'GET';
      const answer = await call(run, 'health', method, `/v1/health${command.query}`, { authorization: command.authorization });
      expect(answer.status).toBe(200);
      if (method === 'GET') expect(answer.json).toEqual({ status: 'ok' });
      return;
    }
    case 'deleteTenant': {
      const tenant = pickOf(run.extraTenants, command.pick);
      if (!tenant) {
        const answer = await call(run, 'delete unknown tenant', 'DELETE', '/v1/admin/tenants/ten_0000000000000000000', {
          key: sandbox.adminKey,
        });
        return expectError('delete unknown tenant', answer, 404, 'not_found');
      }
      const answer = await call(run, 'delete tenant', 'DELETE', `/v1/admin/tenants/${tenant.id}`, { key: sandbox.adminKey });
      expect(answer.status, answer.text).toBe(204);
      // Gone whole: not shown, changed, rotated or switched; its key refused (401, or 403 on an answer API Gateway kept).
      const admin = { key: sandbox.adminKey };
      expectError(
        'deleted tenant',
        await call(run, 'get deleted tenant', 'GET', `/v1/admin/tenants/${tenant.id}`, admin),
        404,
        'not_found',
      );
      const rename = { ...admin, json: { name: 'back' } };
      expectError(
        'deleted tenant',
        await call(run, 'patch deleted tenant', 'PATCH', `/v1/admin/tenants/${tenant.id}`, rename),
        404,
        'not_found',
      );
      const rotate = await call(run, 'rotate deleted tenant', 'POST', `/v1/admin/tenants/${tenant.id}/rotate-key`, admin);
      expectError('deleted tenant', rotate, 404, 'not_found');
      const pause = { ...admin, json: { scope: 'tenant', tenant: tenant.id, action: 'pause' } };
      expectError('deleted tenant', await call(run, 'switch deleted tenant', 'PUT', '/v1/admin/switches', pause), 404, 'not_found');
      const used = await call(run, 'deleted tenant key', 'GET', '/v1/webhooks', { key: tenant.key });
      expect([401, 403], used.text).toContain(used.status);
      run.extraTenants.splice(run.extraTenants.indexOf(tenant), 1);
      liveTenants.delete(tenant.id);
      for (const [id, sw] of run.switches) if (sw.tenant === tenant.id) run.switches.delete(id);
      return;
    }
    case 'putSwitch': {
      // Not on what the run's stream reads: a pause there would hold its events.
      let body: Record<string, unknown>;
      if (command.scope === 'tenant') {
        const tenant = pickOf(run.extraTenants, command.pick);
        if (!tenant) return;
        body = { scope: 'tenant', tenant: tenant.id, action: command.action };
      } else if (command.scope === 'webhook') {
        const webhook = pickOf(run.webhooks, command.pick);
        if (!webhook) return;
        body = { scope: 'webhook', tenant: T.id, target: webhook.id, action: command.action };
      } else {
        body = { scope: 'resource', tenant: T.id, target: `other:${command.pick % 3}`, action: command.action };
      }
      if (command.reason !== undefined) body.reason = command.reason;
      const answer = await call(run, 'put switch', 'PUT', '/v1/admin/switches', { key: sandbox.adminKey, json: body });
      expect(answer.status, answer.text).toBe(200);
      const model = { ...body, reason: command.reason ?? '', id: answer.json.id } as SwitchModel;
      expect(answer.json).toMatchObject(model);
      run.switches.set(model.id, model);
      return;
    }
    case 'putSwitchBad': {
      const raw = typeof command.body === 'string' ? command.body : JSON.stringify(command.body);
      const filled = raw.replaceAll('{T}', T.id).replaceAll('{OTHERWH}', otherWebhook);
      const answer = await call(run, 'put bad switch', 'PUT', '/v1/admin/switches', { key: sandbox.adminKey, raw: filled });
      if (command.notFound) return expectError(`switch ${filled}`, answer, 404, 'not_found');
      return expectError(`switch ${filled.slice(0, 200)}`, answer, 400, 'invalid_request');
    }
    case 'deleteSwitch': {
      const sw = pickOf([...run.switches.values()], command.pick);
      const id = command.bad ?? sw?.id ?? 'sw_0000000000000000000';
      const answer = await call(run, 'delete switch', 'DELETE', `/v1/admin/switches/${id}${command.query ?? ''}`, {
        key: sandbox.adminKey,
      });
      // An id of `..` names no route at all (the path is normalized): 404 before the query is looked at.
      if (command.query && command.bad === '..') return expectError('delete /v1/admin/switches/..', answer, 404, 'not_found');
      if (command.query) return expectError('delete switch with query', answer, 400, 'invalid_request');
      if (command.bad !== undefined || !sw) return expectError('delete unknown switch', answer, 404, 'not_found');
      expect(answer.status, answer.text).toBe(204);
      run.switches.delete(sw.id);
      return;
    }
    case 'adminReads': {
      const answer = await call(run, 'admin read', 'GET', command.path, { key: sandbox.adminKey });
      if (command.ok) expect(answer.status, answer.text).toBe(200);
      else expectError(command.path, answer, 400, 'invalid_request');
      return;
    }
  }
}

/** What the API lists must be what the model predicts: nothing of a refused call, all of an accepted one. */
async function checkState(run: Run): Promise<void> {
  const T = run.tenant;
  const listed = await call(run, 'list webhooks', 'GET', '/v1/webhooks?limit=500', { key: T.key });
  expect(listed.status).toBe(200);
  expect(listed.json.has_more).toBe(false);
  const shown = listed.json.data.map(({ created_at, updated_at, ...w }: Record<string, unknown>) => w);
  expect(shown).toEqual(run.webhooks);
  for (const webhook of run.webhooks) {
    const one = await call(run, 'get webhook', 'GET', `/v1/webhooks/${webhook.id}`, { key: T.key });
    expect(one.json).toMatchObject(webhook);
  }
  const tenant = await call(run, 'get tenant', 'GET', `/v1/admin/tenants/${T.id}`, { key: sandbox.adminKey });
  expect(tenant.json).toMatchObject({ id: T.id, name: T.name, limits: T.limits });
  for (const extra of run.extraTenants) {
    const one = await call(run, 'get tenant', 'GET', `/v1/admin/tenants/${extra.id}`, { key: sandbox.adminKey });
    expect(one.json).toMatchObject({ id: extra.id, name: extra.name, limits: extra.limits });
  }
  const ours = new Set([T.id, ...run.extraTenants.map((t) => t.id)]);
  const switches = await call(run, 'list switches', 'GET', '/v1/admin/switches', { key: sandbox.adminKey });
  const mine = (switches.json.data as SwitchModel[])
    .filter((s) => ours.has(s.tenant))
    .map(({ created_at, ...s }: SwitchModel & { created_at?: string }) => s);
  expect(mine.sort((a, b) => a.id.localeCompare(b.id))).toEqual([...run.switches.values()].sort((a, b) => a.id.localeCompare(b.id)));
  // A refused publish's keys are free: its events, sent again, are accepted (never a duplicate).
  const refused = [...run.refused.values()];
  for (let i = 0; i < refused.length; i += 100) await publishValid(run, refused.slice(i, i + 100));
  // The refusals left the tenant's webhook places free: it can fill up to its max_webhooks.
  while (run.webhooks.length < T.limits.max_webhooks && !pingBudgetUsed(run)) {
    await execute(run, { kind: 'createWebhook', body: { resource: 'team:9' }, verifies: true });
  }
}

/** Every tenant listed by the admin API that this file made is in the model, and the other way round. */
async function checkTenantList(run: Run): Promise<void> {
  const seen = new Map<string, string>();
  let after = '';
  for (;;) {
    const page = await call(run, 'list tenants', 'GET', `/v1/admin/tenants?limit=100${after}`, { key: sandbox.adminKey });
    expect(page.status).toBe(200);
    for (const t of page.json.data) seen.set(t.id, t.name);
    if (!page.json.has_more) break;
    after = `&after=${page.json.data.at(-1).id}`;
  }
  const expected = new Map([[other.id, 'other'], ...[...liveTenants.values()].map((t) => [t.id, t.name] as [string, string])]);
  expect(new Map([...seen].sort())).toEqual(new Map([...expected].sort()));
}

describe('the HTTP API under fuzzed input', () => {
  it('answers every call with a success or a documented 4xx, and leaves nothing half-written', async () => {
    expect(DOCUMENTED.get('invalid_request')).toBe(400);
    expect(DOCUMENTED.size).toBeGreaterThanOrEqual(11);
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 5, maxLength: MAX_COMMANDS, size: 'max' }), async (commands) => {
        const n = ++runCount;
        const created = await createTenant(sandbox, `fuzz ${n}`, { max_webhooks: MAX_WEBHOOKS });
        const tenant: TenantModel = { ...created, name: `fuzz ${n}`, limits: { ...DEFAULT_LIMITS, max_webhooks: MAX_WEBHOOKS } };
        liveTenants.set(tenant.id, tenant);
        const start = await send('GET', `/v1/events?resource=${STREAM}`, { key: tenant.key });
        expect(start.status).toBe(412);
        const run: Run = {
          n,
          tenant,
          extraTenants: [],
          webhooks: [],
          switches: new Map(),
          keys: new Map(),
          refused: new Map(),
          accepted: new Map(),
          sync: start.json.sync,
          pings: [],
          keyCount: 0,
          webhookCount: 0,
          log: [],
        };
        runs.push(run);
        try {
          // A webhook to change, read, replay, switch and delete from the first command on.
          await execute(run, { kind: 'createWebhook', body: { resource: STREAM, types: ['task.*'] }, verifies: true });
          for (const command of commands) await execute(run, command);
          await checkState(run);
          await checkTenantList(run);
        } catch (error) {
          console.error(`run ${n} calls:\n${run.log.join('\n')}`);
          throw error;
        } finally {
          // Lift the run's switches so that later runs' lists stay small.
          for (const sw of run.switches.values()) await send('DELETE', `/v1/admin/switches/${sw.id}`, { key: sandbox.adminKey });
          run.switches.clear();
        }
      }),
      { numRuns: NUM_RUNS, endOnFailure: true, ...(process.env.FUZZ_SEED && { seed: Number(process.env.FUZZ_SEED) }) },
    );
    if (process.env.FUZZ_STATS)
      console.log(
        [...stats]
          .sort()
          .map(([k, n]) => `${n}\t${k}`)
          .join('\n'),
      );
  }, 600_000);

  it("holds in each run's stream exactly the events the run's publishes accepted, as they were sent", async () => {
    expect(runs.length).toBeGreaterThan(0);
    for (const run of runs) {
      const seen = new Map<string, Record<string, unknown>>();
      let sync = run.sync;
      const deadline = Date.now() + 30_000;
      for (;;) {
        const page = await send('GET', `/v1/events?resource=${STREAM}&sync=${encodeURIComponent(sync)}`, { key: run.tenant.key });
        expect(page.status, page.text).toBe(200);
        for (const event of page.json.data) if (event.type !== 'sluice.gap') seen.set(event.id, event);
        sync = page.json.sync;
        if (page.json.has_more) continue;
        if (seen.size >= run.accepted.size || Date.now() > deadline) break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      expect([...seen.keys()].sort(), `run ${run.n}`).toEqual([...run.accepted.keys()].sort());
      for (const [id, sent] of run.accepted) {
        // Streams are at least once (an event may come twice): each time as it was sent.
        const { resource, parents, type, data } = seen.get(id) ?? {};
        expect({ resource, parents, type, data }, `run ${run.n} ${id}`).toEqual({
          resource: sent.resource,
          parents: deliveredParents(sent),
          type: sent.type,
          data: JSON.parse(JSON.stringify(sent.data)),
        });
      }
    }
  }, 120_000);
});
