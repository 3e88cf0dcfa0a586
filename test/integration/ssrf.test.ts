/**
 * SSRF-safe delivery against a real local HTTP server: with private targets not
 * allowed, nothing reaches it, whether the URL names it directly or through a
 * name whose DNS answer points inside (checked at every connection). Names are
 * resolved by a real DNS server on a loopback port (test/support/dns-server.ts).
 */
import dns from 'node:dns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSender, webhookLookup, webhookResolver } from '../../functions/adapters/webhook-sender.ts';
import { type DnsServer, type DnsZone, startDnsServer } from '../support/dns-server.ts';
import { type Receiver, startReceiver } from '../support/receiver.ts';

let receiver: Receiver;
let nameserver: DnsServer;

const ZONE: Record<string, ReturnType<DnsZone>> = {
  'public.example.test': { A: ['93.184.216.34'], AAAA: ['2606:2800:220:1:248:1893:25c8:1946'] },
  'inside.example.test': { A: ['10.0.0.1'] },
  'metadata.example.test': { A: ['169.254.169.254'] },
  'loopback.example.test': { A: ['127.0.0.1'] },
  'loopback6.example.test': { AAAA: ['::1'] },
  'mapped.example.test': { AAAA: ['::ffff:127.0.0.1'] },
  'mixed.example.test': { A: ['93.184.216.34', '127.0.0.1'] },
  'mixed-family.example.test': { A: ['93.184.216.34'], AAAA: ['fd00::1'] },
  'cgnat.example.test': { A: ['100.64.0.1'] },
  'unspecified.example.test': { A: ['0.0.0.0'] },
  'metadata6.example.test': { AAAA: ['fd00:ec2::254'] },
  'compatible.example.test': { AAAA: ['::127.0.0.1'] },
  'nat64.example.test': { AAAA: ['64:ff9b::a9fe:a9fe'] },
  'nat64-local.example.test': { AAAA: ['64:ff9b:1::a00:1'] },
  'six-to-four.example.test': { AAAA: ['2002:7f00:1::1'] },
  'teredo.example.test': { AAAA: ['2001:0:4136:e378:8000:63bf:3fff:fdd2'] },
  'fast-bystander.test': { A: ['127.0.0.1'] },
  // A nameserver that answers A but drops AAAA queries (some do).
  'no-aaaa.example.test': { A: ['93.184.216.34'], AAAA: 'hang' },
  'no-aaaa-private.example.test': { A: ['10.0.0.1'], AAAA: 'hang' },
};

beforeAll(async () => {
  receiver = await startReceiver();
  // Names starting "hang" are never answered, as by a tenant's nameserver that hangs.
  nameserver = await startDnsServer((name) => (name.startsWith('hang') ? 'hang' : ZONE[name]));
});

afterAll(async () => {
  await receiver?.close();
  await nameserver?.close();
});

/** A resolver that asks the test's DNS server, with the options the sender's own has. */
function resolver(): dns.promises.Resolver {
  const resolver = webhookResolver();
  resolver.setServers([nameserver.address]);
  return resolver;
}

const request = (url: string) => ({ url, headers: { 'content-type': 'application/json' }, body: '{}', timeoutMs: 2_000 });

describe('SSRF-safe targets', () => {
  it('refuses plain http and literal private addresses before connecting', async () => {
    // Prepare
    const send = makeSender({ allowPrivateTargets: false, resolver: resolver() });
    const port = new URL(receiver.url).port;
    const queriedBefore = nameserver.queries();

    // Act
    const plain = await send(request(`${receiver.url}/plain`));
    const literal = await send(request(`https://127.0.0.1:${port}/literal`));
    const mapped = await send(request(`https://[::ffff:127.0.0.1]:${port}/mapped`));
    const localhost = await send(request(`https://localhost:${port}/localhost`));

    // Assert
    expect(plain).toMatchObject({ statusCode: undefined, error: 'https_required' });
    expect(literal).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    expect(mapped).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    expect(localhost).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    expect(nameserver.queries()).toBe(queriedBefore);
    expect(receiver.received).toHaveLength(0);
  });

  it('refuses a name that resolves to a forbidden address, at the moment of connecting', async () => {
    const port = new URL(receiver.url).port;
    const send = makeSender({ allowPrivateTargets: false, resolver: resolver() });
    const names = [
      'inside.example.test', // A 10.0.0.1
      'metadata.example.test', // A 169.254.169.254
      'loopback.example.test', // A 127.0.0.1
      'loopback6.example.test', // AAAA ::1
      'mapped.example.test', // AAAA ::ffff:127.0.0.1
      'mixed.example.test', // A 93.184.216.34 and 127.0.0.1
      'mixed-family.example.test', // A 93.184.216.34, AAAA fd00::1
      'cgnat.example.test', // A 100.64.0.1
      'unspecified.example.test', // A 0.0.0.0, which connects to this host
      'metadata6.example.test', // AAAA fd00:ec2::254
      'compatible.example.test', // AAAA ::127.0.0.1
      'nat64.example.test', // AAAA 64:ff9b::169.254.169.254
      'nat64-local.example.test', // AAAA 64:ff9b:1::10.0.0.1
      'six-to-four.example.test', // AAAA 2002:7f00:1:: (127.0.0.1 inside)
      'teredo.example.test', // AAAA 2001:0::/32
    ];
    for (const name of names) {
      // Prepare: the name is sent to at the local receiver's port, so without the check a loopback answer would connect there.
      const queriedBefore = nameserver.queries(name);

      // Act
      const result = await send(request(`https://${name}:${port}/hook`));

      // Assert
      expect(result, name).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
      expect(nameserver.queries(name), name).toBeGreaterThan(queriedBefore);
    }
    expect(receiver.received).toHaveLength(0);
  });

  it('looks the name up again for every connection it opens (no cached answer)', async () => {
    const send = makeSender({ allowPrivateTargets: false, resolver: resolver() });
    const queriedBefore = nameserver.queries('inside.example.test');

    await send(request('https://inside.example.test/one'));
    const queriedOnce = nameserver.queries('inside.example.test') - queriedBefore;
    await send(request('https://inside.example.test/two'));

    // An A and an AAAA query for each connection.
    expect(queriedOnce).toBe(2);
    expect(nameserver.queries('inside.example.test') - queriedBefore).toBe(4);
  });

  it('answers an unparseable URL as a failed attempt, never by throwing', async () => {
    for (const allowPrivateTargets of [false, true]) {
      const send = makeSender({ allowPrivateTargets, resolver: resolver() });

      const result = await send(request('https://exa mple.test/hook'));

      expect(result, String(allowPrivateTargets)).toMatchObject({ statusCode: undefined, error: 'invalid url' });
    }
    // A scheme Node cannot POST to, where the deployment allows more than https.
    const sandboxSend = makeSender({ allowPrivateTargets: true });
    expect(await sandboxSend(request('ftp://127.0.0.1/hook'))).toMatchObject({ statusCode: undefined, error: 'invalid url' });
  });

  it('reaches a local receiver when private targets are allowed (the sandbox)', async () => {
    const send = makeSender({ allowPrivateTargets: true });

    const result = await send(request(`${receiver.url}/allowed`));

    expect(result).toMatchObject({ statusCode: 200, error: undefined });
    expect(receiver.received.map((d) => d.path)).toEqual(['/allowed']);
  });

  it('does not follow a redirect: the 3xx is the answer, and where it points gets nothing', async () => {
    // Prepare: the sandbox's policy, so the local receiver can answer at all; a redirect
    // to a private address would otherwise be a way around the check of the URL's own.
    const send = makeSender({ allowPrivateTargets: true });
    receiver.answer('/moved', { status: 307, headers: { location: `${receiver.url}/redirected` } });

    // Act
    const result = await send(request(`${receiver.url}/moved`));

    // Assert
    expect(result).toMatchObject({ statusCode: 307, error: undefined });
    expect(receiver.received.map((d) => d.path)).not.toContain('/redirected');
  });
});

describe('resolving webhook hosts', () => {
  /** Calls a lookup as Node's connections do, and gives its answer. */
  const lookUp = (lookup: typeof dns.lookup, host: string, options: dns.LookupOptions) =>
    new Promise<{ error: NodeJS.ErrnoException | null; address: unknown; family?: number }>((resolve) =>
      lookup(host, options, (error, address, family) => resolve({ error, address, family })),
    );

  it('answers a public name as dns.lookup does: every address when asked for all, IPv4 first; else the first; or one family', async () => {
    const lookup = webhookLookup(resolver(), true, true);

    const all = await lookUp(lookup, 'public.example.test', { all: true, hints: dns.ADDRCONFIG });
    const one = await lookUp(lookup, 'public.example.test', { hints: dns.ADDRCONFIG });
    const v6 = await lookUp(lookup, 'public.example.test', { family: 6 });
    const missing = await lookUp(lookup, 'nowhere.example.test', { all: true });

    expect(all).toEqual({
      error: null,
      address: [
        { address: '93.184.216.34', family: 4 },
        { address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 },
      ],
      family: undefined,
    });
    expect(one).toEqual({ error: null, address: '93.184.216.34', family: 4 });
    expect(v6).toEqual({ error: null, address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 });
    expect(missing.error?.code).toBe('ENOTFOUND');
  });

  it('asks for IPv4 alone on a machine with no IPv6 address, as getaddrinfo does, and for IPv6 only when a host has no IPv4', async () => {
    // On such a machine (a Lambda function outside a dual-stack VPC), a connection given
    // both families gives its IPv4 attempt 250 ms before it tries IPv6, which has no route.
    const lookup = webhookLookup(resolver(), true, false);
    const queriedBefore = nameserver.queries('public.example.test');

    const all = await lookUp(lookup, 'public.example.test', { all: true });
    const v6only = await lookUp(lookup, 'loopback6.example.test', { all: true });
    const missing = await lookUp(lookup, 'nowhere.example.test', { all: true });

    expect(all).toEqual({ error: null, address: [{ address: '93.184.216.34', family: 4 }], family: undefined });
    expect(nameserver.queries('public.example.test') - queriedBefore).toBe(1);
    expect(v6only.error?.code).toBe('forbidden_address');
    expect(missing.error?.code).toBe('ENOTFOUND');
  });

  it('does not wait out a family whose queries go unanswered once the other has answered', async () => {
    const lookup = webhookLookup(resolver(), true, true);

    const started = performance.now();
    const all = await lookUp(lookup, 'no-aaaa.example.test', { all: true });
    const took = performance.now() - started;
    const refused = await lookUp(lookup, 'no-aaaa-private.example.test', { all: true });

    // The A answer, after a short grace for the AAAA one, not the resolver's 2 to 4 s.
    expect(all).toEqual({ error: null, address: [{ address: '93.184.216.34', family: 4 }], family: undefined });
    expect(took).toBeLessThan(1_000);
    expect(refused.error?.code).toBe('forbidden_address');
  });

  it("resolves and sends to a bystander's host at once while lookups of names whose nameserver never answers are in flight", async () => {
    // Prepare: more sends to unanswered names than libuv has threadpool threads (4),
    // each as a tenant whose nameserver hangs would make, all under way. Any c-ares resolver.
    const hanging = new dns.promises.Resolver();
    hanging.setServers([nameserver.address]);
    const sandbox = makeSender({ allowPrivateTargets: true, resolver: hanging });
    const strict = makeSender({ allowPrivateTargets: false, resolver: hanging });
    const port = new URL(receiver.url).port;
    const stuck = Array.from({ length: 8 }, (_, i) =>
      (i % 2 ? strict : sandbox)(request(`${i % 2 ? 'https' : 'http'}://hang-${i}.example.test:${port}/stuck`)),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(nameserver.queries('hang-7.example.test')).toBeGreaterThan(0);

    try {
      // Act
      const bystander = await sandbox(request(`http://fast-bystander.test:${port}/bystander`));
      const refused = await strict(request(`https://metadata.example.test:${port}/refused`));

      // Assert: answered in well under a second (a lookup of a hanging name takes seconds).
      expect(bystander).toMatchObject({ statusCode: 200, error: undefined });
      expect(bystander.durationMs).toBeLessThan(1_000);
      expect(refused).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
      expect(refused.durationMs).toBeLessThan(1_000);
      expect(receiver.received.map((d) => d.path)).toContain('/bystander');
    } finally {
      hanging.cancel();
    }
    // Cancelled, the stuck lookups fail their attempts; none reached the receiver.
    for (const result of await Promise.all(stuck)) expect(result).toMatchObject({ statusCode: undefined, error: 'ECANCELLED' });
    expect(receiver.received.map((d) => d.path)).not.toContain('/stuck');
  });

  it("gives up a name whose nameserver never answers within a delivery's timeout, as a failed attempt", async () => {
    const send = makeSender({ allowPrivateTargets: false, resolver: resolver() });

    const result = await send({ ...request('https://hang-alone.example.test/hook'), timeoutMs: 10_000 });

    // The resolver's own 2 tries of 1 s, about 4 s in all: not the attempt's timeout.
    expect(result).toMatchObject({ statusCode: undefined, error: 'ETIMEOUT' });
    expect(result.durationMs).toBeGreaterThan(1_000);
    expect(result.durationMs).toBeLessThan(6_000);
  });
});
