/**
 * Sends one signed POST to a subscriber. Redirects are not followed, the whole
 * exchange is bounded by the timeout, and at most a few KiB of the answer is read.
 * Connections are kept open between deliveries to the same host and port, as a
 * browser or any HTTP client keeps them: a delivery then costs no TCP or TLS
 * handshake. Every new connection is checked when it connects (below).
 */
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import { checkTargetUrl, isForbiddenAddress } from '../core/ssrf.ts';

export interface SendResult {
  /** The HTTP status, or undefined when no answer came (connection error, timeout). */
  readonly statusCode: number | undefined;
  readonly durationMs: number;
  /** A short description of what went wrong, for the attempts log; never a secret. */
  readonly error: string | undefined;
  /** `Retry-After` as sent, for 429/503. */
  readonly retryAfter: string | undefined;
  /** The first bytes of the answer. */
  readonly responseSnippet: string;
}

export interface SendRequest {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  readonly timeoutMs: number;
}

const MAX_RESPONSE_BYTES = 4 * 1024;

/**
 * How long an idle connection is kept. Below the 5 s after which a Node server
 * closes one (most servers wait longer), so the subscriber rarely closes it first;
 * a server that announces a shorter `Keep-Alive: timeout` is believed, less a second.
 */
const IDLE_CONNECTION_MS = 4_000;

/** Errors by which a kept connection shows it was closed at the other end while idle. */
const STALE_CONNECTION_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

export type Sender = (request: SendRequest) => Promise<SendResult>;

type LookupFunction = typeof dns.lookup;

/** What the sender asks of a DNS resolver: `dns.promises.Resolver` has it. */
export type WebhookResolver = Pick<dns.promises.Resolver, 'resolve4' | 'resolve6'>;

/**
 * How long the resolver waits for a nameserver's answer before it asks again, and how
 * many times it asks: a name whose nameserver never answers fails after 2 to 4 s
 * (c-ares adapts each wait to the nameserver's answer times), well within a
 * delivery's 10 s, and a lost packet is asked again.
 */
const RESOLVE_TRY_MS = 1_000;
const RESOLVE_TRIES = 2;

/**
 * The resolver for webhook hosts where private targets are not allowed: c-ares, which
 * asks the nameservers itself from the event loop. dns.lookup instead runs
 * getaddrinfo on one of libuv's 4 threadpool threads and holds it until the system
 * resolver gives up, whatever the attempt's timeout: a tenant whose nameserver never
 * answers would take all 4, and every other tenant's new connections, and the AWS
 * SDK's, would wait behind it. A query given up here holds nothing.
 */
export function webhookResolver(): dns.promises.Resolver {
  return new dns.promises.Resolver({ timeout: RESOLVE_TRY_MS, tries: RESOLVE_TRIES });
}

export interface SenderOptions {
  /** Allow http:// and private, loopback and link-local targets (the sandbox). */
  readonly allowPrivateTargets: boolean;
  /**
   * Resolves webhook hosts; tests hand it one that asks a DNS server of their own.
   * @default webhookResolver() where private targets are not allowed; in the sandbox,
   * dns.lookup, which also reads /etc/hosts (localhost and the like)
   */
  readonly resolver?: WebhookResolver;
  /** The clock that tells how long the sender sat idle; tests inject one. */
  readonly now?: () => number;
}

/**
 * Whether this machine has an IPv6 address to connect from (neither loopback nor
 * link-local), as getaddrinfo's ADDRCONFIG asks. A Lambda function outside a dual-stack
 * VPC has none: given IPv6 addresses as well, Node's connection tries each family in
 * turn and gives the first attempt only 250 ms (`autoSelectFamilyAttemptTimeout`), so a
 * far-away endpoint, or one lost SYN, would fail every new connection.
 */
export function hasIpv6Address(): boolean {
  return Object.values(os.networkInterfaces()).some((addresses) =>
    (addresses ?? []).some((a) => a.family === 'IPv6' && !a.internal && !a.address.toLowerCase().startsWith('fe80:')),
  );
}

/**
 * The lookup a sender connects with: it asks the resolver for the host's IPv4 and
 * IPv6 addresses (one family when the connection names one, and IPv4 alone, unless
 * the host has none, on a machine with no IPv6 address: `ipv6`) and, with `checked`,
 * refuses them all if any is forbidden. It runs on every connection, so a name that
 * resolved to a public address at creation and to a private one now (DNS rebinding)
 * is refused now; and the connection is made only to addresses it answered, so only
 * to checked ones. It answers as dns.lookup does: every address when asked for `all`
 * (as Node's connections, which try each family in turn, ask), else the first. IPv4
 * comes first, so is tried first: most Lambda functions have no IPv6 route.
 */
export function webhookLookup(resolver: WebhookResolver, checked: boolean, ipv6 = hasIpv6Address()): LookupFunction {
  const lookup = (hostname: string, options: unknown, callback: unknown) => {
    const cb = (typeof options === 'function' ? options : callback) as (
      error: NodeJS.ErrnoException | null,
      address: string | dns.LookupAddress[],
      family?: number,
    ) => void;
    const opts = (typeof options === 'object' && options !== null ? options : {}) as dns.LookupOptions;
    resolveAddresses(resolver, hostname, opts.family, ipv6).then(
      (list) => {
        if (checked && list.some((a) => isForbiddenAddress(a.address))) {
          const refused: NodeJS.ErrnoException = new Error(`${hostname} resolves to a forbidden address`);
          refused.code = 'forbidden_address';
          return cb(refused, []);
        }
        if (opts.all) return cb(null, list);
        const first = list[0] as dns.LookupAddress;
        return cb(null, first.address, first.family);
      },
      (error: NodeJS.ErrnoException) => cb(error, []),
    );
  };
  return lookup as unknown as LookupFunction;
}

/**
 * A host's addresses of the family asked for, or of both (IPv4 alone on a machine with
 * no IPv6 address, unless the host has no IPv4 one). A family without any (ENODATA) or
 * whose query failed is left out; with no address at all, the error that says most (a
 * timeout or a refusal rather than "no such record").
 */
async function resolveAddresses(
  resolver: WebhookResolver,
  hostname: string,
  family: dns.LookupOptions['family'],
  ipv6: boolean,
): Promise<dns.LookupAddress[]> {
  if (!ipv6 && (family === undefined || family === 0)) {
    try {
      return await resolveAddresses(resolver, hostname, 4, ipv6);
    } catch (error) {
      // A name with no IPv4 address at all: its IPv6 ones (connecting will say there is no route).
      if ((error as NodeJS.ErrnoException).code !== dns.NODATA) throw error;
      return resolveAddresses(resolver, hostname, 6, ipv6);
    }
  }
  const families: readonly (4 | 6)[] = family === 4 || family === 'IPv4' ? [4] : family === 6 || family === 'IPv6' ? [6] : [4, 6];
  const answers = await settledWithGrace(families.map((f) => (f === 4 ? resolver.resolve4(hostname) : resolver.resolve6(hostname))));
  const list = answers.flatMap((answer, i) =>
    answer?.status === 'fulfilled' ? answer.value.map((address) => ({ address, family: families[i] as 4 | 6 })) : [],
  );
  if (list.length > 0) return list;
  const errors = answers.flatMap((answer) => (answer?.status === 'rejected' ? [answer.reason as NodeJS.ErrnoException] : []));
  const noAddress: NodeJS.ErrnoException = Object.assign(new Error(`${hostname} has no address`), { code: dns.NODATA });
  throw errors.find((error) => error.code !== dns.NODATA) ?? errors[0] ?? noAddress;
}

/**
 * How long the other family's query may go on once one family has answered with
 * addresses: some nameservers drop AAAA queries, and a connection must not wait out the
 * resolver's tries (2 to 4 s) for them. Only addresses that were answered are checked
 * and connected to, so one left out is never connected to.
 */
const OTHER_FAMILY_GRACE_MS = 200;

/**
 * Each query's outcome, as Promise.allSettled gives it, but once one has answered with
 * addresses, the others get OTHER_FAMILY_GRACE_MS more: those still unanswered then are
 * left out (undefined).
 */
function settledWithGrace<T>(queries: readonly Promise<readonly T[]>[]): Promise<Array<PromiseSettledResult<readonly T[]> | undefined>> {
  return new Promise((resolve) => {
    const results: Array<PromiseSettledResult<readonly T[]> | undefined> = queries.map(() => undefined);
    let pending = queries.length;
    let grace: NodeJS.Timeout | undefined;
    const settle = (i: number, result: PromiseSettledResult<readonly T[]>) => {
      results[i] = result;
      pending -= 1;
      if (pending === 0) {
        clearTimeout(grace);
        resolve(results);
      } else if (result.status === 'fulfilled' && result.value.length > 0 && grace === undefined) {
        grace = setTimeout(() => resolve([...results]), OTHER_FAMILY_GRACE_MS);
      }
    };
    queries.forEach((query, i) => {
      query.then(
        (value) => settle(i, { status: 'fulfilled', value }),
        (reason: unknown) => settle(i, { status: 'rejected', reason }),
      );
    });
  });
}

/**
 * A sender for the deployment's policy. With private targets not allowed, a URL
 * must be https and name a public host; a name's addresses are checked by the
 * lookup at every connection, a literal address (which Node connects to without a
 * lookup) before the request.
 */
export function makeSender(options: SenderOptions): Sender {
  const pool = connectionPool(options.now ?? Date.now);
  if (options.allowPrivateTargets) {
    const lookup = options.resolver && webhookLookup(options.resolver, false);
    return (request) => pool.use((agents) => send(request, agents, lookup));
  }
  const lookup = webhookLookup(options.resolver ?? webhookResolver(), true);
  return async (request) => {
    const refusal = refuseTarget(request.url);
    if (refusal) return { statusCode: undefined, durationMs: 0, error: refusal, retryAfter: undefined, responseSnippet: '' };
    return pool.use((agents) => send(request, agents, lookup));
  };
}

/** One sender's pools of kept connections, one per scheme. */
interface Agents {
  readonly http: http.Agent;
  readonly https: https.Agent;
}

/**
 * The kept connections. A timer closes one idle for `IDLE_CONNECTION_MS`, but a
 * Lambda environment is frozen between invocations and its timers do not run: so
 * after a pause that long with no delivery in flight, every kept connection is
 * closed before the next delivery, which connects afresh.
 */
function connectionPool(now: () => number) {
  const open = (): Agents => ({
    http: new http.Agent({ keepAlive: true, timeout: IDLE_CONNECTION_MS }),
    https: new https.Agent({ keepAlive: true, timeout: IDLE_CONNECTION_MS }),
  });
  let agents = open();
  let inFlight = 0;
  let lastActive = now();
  return {
    async use<T>(sendWith: (agents: Agents) => Promise<T>): Promise<T> {
      if (inFlight === 0 && now() - lastActive >= IDLE_CONNECTION_MS) {
        agents.http.destroy();
        agents.https.destroy();
        agents = open();
      }
      inFlight++;
      try {
        return await sendWith(agents);
      } finally {
        inFlight--;
        lastActive = now();
      }
    },
  };
}

/** The short code for a URL that must not be requested, or undefined (an unparseable URL is left to `send`). */
function refuseTarget(url: string): 'https_required' | 'forbidden_address' | undefined {
  if (!URL.canParse(url)) return undefined;
  if (new URL(url).protocol !== 'https:') return 'https_required';
  return checkTargetUrl(url, false) ? 'forbidden_address' : undefined;
}

function send(request: SendRequest, agents: Agents, lookup: LookupFunction | undefined): Promise<SendResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    let settled = false;
    // Declared before anything can finish: a URL or request refused before the timer
    // is set must resolve as a failed attempt, not throw (the delivery would fail as
    // an unexpected error and SQS would deliver it again and again).
    let timer: NodeJS.Timeout | undefined;
    let current: http.ClientRequest | undefined;
    // The answer under way on `current` once its status line came: what the timer reports if the body is late.
    let answer: (() => Omit<SendResult, 'durationMs'>) | undefined;
    // Whether the POST went again after a kept connection failed: once at most.
    let resent = false;
    const finish = (result: Omit<SendResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, durationMs: Math.round(performance.now() - started) });
    };
    const post = (fresh = false) => {
      let req: http.ClientRequest;
      try {
        const url = new URL(request.url);
        const transport = url.protocol === 'https:' ? https : http;
        req = transport.request(url, {
          method: 'POST',
          headers: { ...request.headers, 'content-length': Buffer.byteLength(request.body) },
          // A POST sent again goes on a new connection of its own, not another kept one.
          agent: fresh ? false : url.protocol === 'https:' ? agents.https : agents.http,
          ...(lookup && { lookup }),
        });
      } catch {
        finish({ statusCode: undefined, error: 'invalid url', retryAfter: undefined, responseSnippet: '' });
        return;
      }
      current = req;
      answer = undefined;
      req.on('error', (error: NodeJS.ErrnoException) => {
        // A status that came is the answer, whatever breaks after it (a reset before the
        // body ends, bytes past it): Node reports the request's error before the answer's.
        const sent = answer?.();
        if (sent?.statusCode !== undefined) return finish(sent);
        // A kept connection that the subscriber closed while it sat idle: nothing was
        // answered on it, so the POST goes again, once, on a new connection, still within
        // the timeout. Once: a subscriber that read it and then reset the connection (a
        // worker dying on it) must not get it again on every connection the pool keeps.
        if (!resent && req.reusedSocket && !settled && STALE_CONNECTION_ERRORS.has(error.code ?? '')) {
          resent = true;
          return post(true);
        }
        finish({ statusCode: undefined, error: error.code ?? 'connection error', retryAfter: undefined, responseSnippet: '' });
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const reply = () => {
          const retryAfter = res.headers['retry-after'];
          return {
            statusCode: res.statusCode,
            error: undefined,
            retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
            responseSnippet: Buffer.concat(chunks).toString('utf8').slice(0, 200),
          };
        };
        answer = reply;
        const done = () => finish(reply());
        res.on('data', (chunk: Buffer) => {
          if (size < MAX_RESPONSE_BYTES) chunks.push(chunk.subarray(0, MAX_RESPONSE_BYTES - size));
          size += chunk.length;
          if (size < MAX_RESPONSE_BYTES) return;
          // Enough read: the rest is not, and its connection is closed rather than kept.
          done();
          res.destroy();
        });
        // An answer read to its end leaves its connection to the pool.
        res.on('end', done);
        res.on('error', done);
      });
      req.end(request.body);
    };
    timer = setTimeout(() => {
      // An endpoint that sent its status in time answered, however slowly its body comes:
      // a 2xx is a delivery, not a timeout to send again.
      const sent = answer?.();
      finish(
        sent?.statusCode !== undefined
          ? sent
          : { statusCode: undefined, error: `no answer within ${request.timeoutMs} ms`, retryAfter: undefined, responseSnippet: '' },
      );
      current?.destroy();
    }, request.timeoutMs);
    post();
  });
}
