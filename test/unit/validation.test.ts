import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../functions/core/errors.ts';
import {
  InexactInteger,
  parseJsonObject,
  validatePublish,
  validateReplay,
  validateSwitch,
  validateTenantCreate,
  validateWebhookCreate,
  validateWebhookPatch,
} from '../../functions/core/validation.ts';

const good = { resource: 'task:42', parents: ['project:7'], type: 'task.changed', data: { a: 1 } };

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ValidationError) return [...error.problems];
    throw error;
  }
  throw new Error('expected a ValidationError');
}

describe('publish validation', () => {
  it('accepts a valid event and keeps the idempotency key', () => {
    const [input] = validatePublish({ events: [{ ...good, id: 'key-1' }] });
    expect(input).toEqual({ resource: 'task:42', parents: ['project:7'], type: 'task.changed', data: { a: 1 }, idempotencyKey: 'key-1' });
  });

  it('takes each parent once, and not the resource itself', () => {
    const [input] = validatePublish({ events: [{ ...good, parents: ['project:7', 'task:42', 'project:7', 'org:1'] }] });
    expect(input?.parents).toEqual(['project:7', 'org:1']);
  });

  it('accepts null and scalar data', () => {
    expect(
      validatePublish({
        events: [
          { ...good, data: null },
          { ...good, data: 3 },
        ],
      }),
    ).toHaveLength(2);
  });

  it.each([
    [{}, /events must be a list/],
    [{ events: [] }, /events must be a list/],
    [{ events: Array.from({ length: 101 }, () => good) }, /1 to 100/],
    [{ events: [{ ...good, resource: 'has space' }] }, /resource must match/],
    [{ events: [{ ...good, resource: 'a'.repeat(201) }] }, /resource must match/],
    [{ events: [{ ...good, parents: ['ok', 'bad/slash'] }] }, /parents\[1\]/],
    [{ events: [{ ...good, parents: null }] }, /parents must be a list/],
    // Not iterable: once turned into a 500 while the request's input was built anyway.
    [{ events: [{ ...good, parents: 5 }] }, /parents must be a list/],
    [{ events: [{ ...good, parents: { p: 'project:7' } }] }, /parents must be a list/],
    [{ events: [{ ...good, parents: true }] }, /parents must be a list/],
    [{ events: [{ ...good, type: 'Task.Changed' }] }, /type must match/],
    [{ events: [{ ...good, type: 'task..changed' }] }, /type must match/],
    [{ events: [{ ...good, type: 'sluice.gap' }] }, /reserved/],
    // A type that matches the pattern but is too long is told so, not told to match it.
    [{ events: [{ ...good, type: 'a'.repeat(201) }] }, /type must be at most 200 characters/],
    [{ events: [{ resource: 'a', type: 'a' }] }, /data is required/],
    [{ events: [{ ...good, data: 'x'.repeat(64 * 1024) }] }, /at most 65536 bytes/],
    [{ events: [{ ...good, id: '' }] }, /id must be/],
    [
      {
        events: [
          { ...good, id: 'k' },
          { ...good, id: 'k' },
        ],
      },
      /repeats/,
    ],
    [{ events: [{ ...good, colour: 'red' }] }, /colour is not a known field/],
    [{ events: [good], extra: 1 }, /extra is not a known field/],
    [{ events: ['nope'] }, /must be an object/],
  ])('rejects %j', (body, message) => {
    expect(problems(() => validatePublish(body as Record<string, unknown>)).join('\n')).toMatch(message);
  });

  it('lists every problem of a request', () => {
    const found = problems(() => validatePublish({ events: [{ resource: '', type: 'X' }] }));
    expect(found.length).toBe(3);
  });

  it('parses only JSON objects', () => {
    expect(() => parseJsonObject('{')).toThrow(/not valid JSON/);
    expect(() => parseJsonObject('[1]')).toThrow(/JSON object/);
    expect(parseJsonObject('{"a":1}')).toEqual({ a: 1 });
  });
});

describe('parsing a body', () => {
  it('keeps in place of an integer a double would round a mark that holds its text, and parses everything else as JSON.parse does', () => {
    const parsed = parseJsonObject(
      '{"a":12345678901234567891,"b":9007199254740993,"c":9007199254740992,"d":"12345678901234567891","e":1.25,"f":-0}',
    );
    expect(parsed.a).toEqual(new InexactInteger('12345678901234567891'));
    expect(parsed.b).toEqual(new InexactInteger('9007199254740993'));
    expect(parsed).toMatchObject({ c: 9007199254740992, d: '12345678901234567891', e: 1.25 });
    expect(Object.is(parsed.f, -0)).toBe(true);
    expect(problems(() => validatePublish({ events: [{ ...good, data: { n: parsed.a } }] }))).toEqual([
      'events[0].data must hold only integers a JSON double keeps exactly (all up to 2^53 = 9007199254740992); send larger ones as strings',
    ]);
  });

  it('marks an integer a double would round however it is written: with a fraction of zeros, or an exponent', () => {
    const parsed = parseJsonObject(
      '{"a":12345678901234567890.0,"b":1.2345678901234567890e19,"c":9007199254740993e0,"d":9.007199254740993e15,"e":1.0e21,"f":12345678901234567.5,"g":1e400}',
    );
    expect(parsed.a).toEqual(new InexactInteger('12345678901234567890.0'));
    expect(parsed.b).toEqual(new InexactInteger('1.2345678901234567890e19'));
    expect(parsed.c).toEqual(new InexactInteger('9007199254740993e0'));
    expect(parsed.d).toEqual(new InexactInteger('9.007199254740993e15'));
    // Exact in a double (1e21), or no integer at all (the double rounds 12345678901234567.5 to 12345678901234568): as JSON.parse gives them.
    expect(parsed).toMatchObject({ e: 1e21, f: 12345678901234568, g: Number.POSITIVE_INFINITY });
  });

  it('judges a number by what it is delivered as, not by the digits elsewhere in the body', () => {
    // 1e23 and 8.08113891772845e+83 are integers no double holds exactly, but each is the
    // double's own shortest form (what JSON.stringify writes): delivered as written. Before,
    // they were refused only when some other value of the body had 16 digits in a row.
    const data = '{"a":1e23,"b":8.08113891772845e+83,"c":-3.2e25}';
    const alone = `{"events":[{"resource":"n:1","type":"a.b","data":${data}}]}`;
    const beside = `{"events":[{"resource":"n:1","type":"a.b","data":${data}},{"resource":"n:2","type":"a.b","data":"1234567890123456"}]}`;
    expect(validatePublish(parseJsonObject(alone))[0]?.data).toEqual({ a: 1e23, b: 8.08113891772845e83, c: -3.2e25 });
    expect(validatePublish(parseJsonObject(beside))[0]?.data).toEqual({ a: 1e23, b: 8.08113891772845e83, c: -3.2e25 });
    // Written otherwise, the same doubles would be delivered as another number: refused, 16 digits or not.
    const rounded = parseJsonObject('{"a":100000000000000000000001,"b":1.0000000000000000000001e23}');
    expect(rounded.a).toEqual(new InexactInteger('100000000000000000000001'));
    expect(rounded.b).toEqual(new InexactInteger('1.0000000000000000000001e23'));
  });

  it('says a body nested thousands deep is too deep, not that it is not JSON', () => {
    const deep = `{"id":"1234567890123456","data":${'['.repeat(5_000)}${']'.repeat(5_000)}}`;
    expect(problems(() => parseJsonObject(deep))).toEqual(['the body must nest arrays and objects at most 32 levels deep']);
  });
});

describe('webhook validation', () => {
  const https = { allowHttp: false, maxRatePerSecond: 50 };
  const http = { allowHttp: true, maxRatePerSecond: 50 };

  it('accepts https and defaults types to everything', () => {
    expect(validateWebhookCreate({ resource: 'project:7', url: 'https://hooks.example.com/x' }, https)).toEqual({
      resource: 'project:7',
      url: 'https://hooks.example.com/x',
      types: ['*'],
      description: '',
    });
  });

  it('takes a host named by a DNS name (a trailing dot, an underscore, an IDNA name) or an IP literal', () => {
    for (const url of [
      'https://hooks.example.com./x',
      'https://my_hooks.example.com/x',
      'https://bücher.example/x',
      'https://[2606:4700::1111]/x',
      'https://1.1.1.1/x',
    ]) {
      expect(validateWebhookCreate({ resource: 'p', url }, https).url, url).toBe(url);
    }
  });

  it('refuses plain http unless private targets are allowed', () => {
    expect(problems(() => validateWebhookCreate({ resource: 'p', url: 'http://example.com' }, https)).join()).toMatch(/https/);
    expect(validateWebhookCreate({ resource: 'p', url: 'http://127.0.0.1:9/x' }, http).url).toBe('http://127.0.0.1:9/x');
  });

  it.each([
    [{ resource: 'p', url: 'ftp://x' }, /url must use/],
    [{ resource: 'p', url: 'not a url' }, /absolute URL/],
    [{ resource: 'p', url: 'https://user:pw@example.com' }, /credentials/],
    // The URL parser drops these, so the webhook would show one URL and be sent to another.
    [{ resource: 'p', url: ' https://example.com/hook' }, /spaces or control characters/],
    [{ resource: 'p', url: 'https://example.com/ho\tok' }, /spaces or control characters/],
    [{ resource: 'p', url: 'https://example.com/hook\n' }, /spaces or control characters/],
    [{ resource: 'p', url: 'https://example.com', types: [] }, /types must be a list/],
    [{ resource: 'p', url: 'https://example.com', types: null }, /types must be a list/],
    [{ resource: 'p', url: 'https://example.com', types: ['task.**'] }, /types\[0\]/],
    [{ resource: 'p', url: 'https://example.com', types: [`${'a'.repeat(200)}.*`] }, /types\[0\] must be at most 200 characters/],
    [{ url: 'https://example.com' }, /resource must match/],
    [{ resource: 'p', url: 'https://169.254.169.254/latest' }, /metadata/],
    [{ resource: 'p', url: 'https://localhost/x' }, /localhost/],
    // The URL parser takes empty labels, which no resolver does: bad input, not an endpoint that failed its ping.
    [{ resource: 'p', url: 'https://localhost../x' }, /url must name its host by an IP address or a DNS name/],
    [{ resource: 'p', url: 'https://hooks..example.com/x' }, /url must name its host/],
    [{ resource: 'p', url: 'https://.example.com/x' }, /url must name its host/],
    [{ resource: 'p', url: `https://${'a'.repeat(64)}.example.com/x` }, /url must name its host/],
  ])('rejects %j', (body, message) => {
    expect(problems(() => validateWebhookCreate(body, https)).join('\n')).toMatch(message);
  });

  it('patches only known fields, at least one', () => {
    expect(validateWebhookPatch({ status: 'disabled' }, https)).toEqual({ status: 'disabled' });
    expect(problems(() => validateWebhookPatch({}, https)).join()).toMatch(/at least one/);
    expect(problems(() => validateWebhookPatch({ status: 'paused' }, https)).join()).toMatch(/status/);
  });

  it('refuses a description or url holding half of a surrogate pair, which DynamoDB (UTF-8) cannot store as given; a whole pair is fine', () => {
    const hook = { resource: 'p', url: 'https://example.com/hook' };
    expect(problems(() => validateWebhookCreate({ ...hook, description: 'a\ud800b' }, https))).toEqual([
      'description must be valid Unicode (it holds half of a surrogate pair)',
    ]);
    expect(problems(() => validateWebhookPatch({ description: '\udc00' }, https)).join()).toMatch(/valid Unicode/);
    expect(problems(() => validateWebhookCreate({ ...hook, url: 'https://example.com/\ud800' }, https))).toEqual([
      'url must be valid Unicode (it holds half of a surrogate pair)',
    ]);
    expect(validateWebhookCreate({ ...hook, description: 'ship it \u{1f680}' }, https).description).toBe('ship it \u{1f680}');
  });

  it("takes a rate for the endpoint up to the deployment's, and null for the deployment's", () => {
    const hook = { resource: 'p', url: 'https://example.com/hook' };
    expect(validateWebhookCreate({ ...hook, rate_per_second: 5 }, https).ratePerSecond).toBe(5);
    expect(validateWebhookCreate({ ...hook, rate_per_second: 50 }, https).ratePerSecond).toBe(50);
    expect(validateWebhookCreate({ ...hook, rate_per_second: null }, https)).not.toHaveProperty('ratePerSecond');
    expect(validateWebhookPatch({ rate_per_second: 1 }, https)).toEqual({ ratePerSecond: 1 });
    expect(validateWebhookPatch({ rate_per_second: null }, https)).toEqual({ ratePerSecond: null });
    for (const rate of [0, -1, 51, 2.5, '5', true, {}]) {
      const message = /rate_per_second must be a whole number of POSTs a second from 1 to 50/;
      expect(problems(() => validateWebhookCreate({ ...hook, rate_per_second: rate }, https)).join(), JSON.stringify(rate)).toMatch(
        message,
      );
      expect(problems(() => validateWebhookPatch({ rate_per_second: rate }, https)).join(), JSON.stringify(rate)).toMatch(message);
    }
  });
});

describe('tenant validation', () => {
  const defaults = { max_webhooks: 100, rate_per_second: 500, burst: 1000 };

  it('fills limits from the defaults', () => {
    expect(validateTenantCreate({ name: ' acme ', limits: { max_webhooks: 5 } }, defaults)).toEqual({
      name: 'acme',
      limits: { max_webhooks: 5, rate_per_second: 500, burst: 1000 },
    });
  });

  it('rejects bad names and limits', () => {
    expect(problems(() => validateTenantCreate({ name: '' }, defaults)).join()).toMatch(/name/);
    for (const name of ['\u0000', 'two\nlines', 'bell\u0007', 'c1\u0085']) {
      expect(problems(() => validateTenantCreate({ name }, defaults)).join(), JSON.stringify(name)).toMatch(/control characters/);
    }
    expect(problems(() => validateTenantCreate({ name: 'acme\ud83d' }, defaults))).toEqual([
      'name must be valid Unicode (it holds half of a surrogate pair)',
    ]);
    expect(problems(() => validateTenantCreate({ name: 'a', limits: { burst: 0 } }, defaults)).join()).toMatch(/burst/);
    expect(problems(() => validateTenantCreate({ name: 'a', limits: { nope: 1 } }, defaults)).join()).toMatch(/nope/);
    expect(problems(() => validateTenantCreate({ name: 'a', limits: null }, defaults)).join()).toMatch(/limits must be an object/);
  });
});

describe('switch validation', () => {
  it('refuses a reason holding half of a surrogate pair', () => {
    const body = { scope: 'tenant', tenant: 'ten_0123456789abcdefghi', action: 'pause' };
    expect(validateSwitch({ ...body, reason: 'incident \u{1f525}' }).reason).toBe('incident \u{1f525}');
    expect(problems(() => validateSwitch({ ...body, reason: 'incident \ud83d' }))).toEqual([
      'reason must be valid Unicode (it holds half of a surrogate pair)',
    ]);
  });
});

describe('replay validation', () => {
  it('takes an ISO-8601 date-time, with or without until', () => {
    expect(validateReplay({ since: '2026-11-22T10:00:00Z' })).toEqual({ since: Date.parse('2026-11-22T10:00:00Z'), until: undefined });
    expect(validateReplay({ since: '2024-02-29T10:00:00+01:00', until: '2026-11-22T24:00:00Z' })).toEqual({
      since: Date.parse('2024-02-29T09:00:00Z'),
      until: Date.parse('2026-11-23T00:00:00Z'),
    });
  });

  it('refuses a day its month does not have, which JavaScript would roll into the next month', () => {
    // 2026-02-30 would replay from 2 March: days of events left out, and a 202 saying all is well.
    expect(problems(() => validateReplay({ since: '2026-02-30T10:00:00Z' }))).toEqual([expect.stringMatching(/^since must be/)]);
    expect(problems(() => validateReplay({ since: '2026-04-01T00:00:00Z', until: '2026-04-31T00:00:00Z' }))).toEqual([
      expect.stringMatching(/^until must be/),
    ]);
    expect(problems(() => validateReplay({ since: '2025-02-29T00:00:00Z' }))).toHaveLength(1);
  });

  it("refuses a date-time without its offset, which would be read in the server's time zone", () => {
    // UTC on Lambda, the laptop's zone in the sandbox: the same request would replay another window.
    expect(problems(() => validateReplay({ since: '2026-11-22T10:00:00' }))).toEqual([expect.stringMatching(/^since must .*offset/)]);
    expect(problems(() => validateReplay({ since: '2026-11-22T10:00:00Z', until: '2026-11-22T11:00' }))).toEqual([
      expect.stringMatching(/^until must .*offset/),
    ]);
    // What Date.parse would take besides ISO-8601 is refused too.
    for (const since of ['2026-11-22T10:00:00 GMT', '2026-11-22T10:00:00Zjunk', '2026-11-22T10:00:00+0100', '2026-11-22T10Z']) {
      expect(
        problems(() => validateReplay({ since })),
        since,
      ).toHaveLength(1);
    }
    expect(validateReplay({ since: '2026-11-22T10:00Z', until: '2026-11-22T10:00:00.5-02:30' })).toEqual({
      since: Date.parse('2026-11-22T10:00:00Z'),
      until: Date.parse('2026-11-22T12:30:00.500Z'),
    });
  });
});
