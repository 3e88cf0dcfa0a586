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

export interface SenderOptions {
  /** Allow http:// and private, loopback and link-local targets (the sandbox). */
  readonly allowPrivateTargets: boolean;
  /** DNS lookup to use; tests inject one. */
  readonly lookup?: LookupFunction;
  /** The clock that tells how long the sender sat idle; tests inject one. */
  readonly now?: () => number;
}

/**
 * A lookup that refuses forbidden addresses. It runs on every connection, so a
 * name that resolved to a public address at creation and to a private one now
 * (DNS rebinding) is refused now.
 */
function guardedLookup(lookup: LookupFunction): LookupFunction {
  const guarded = (hostname: string, options: unknown, callback: unknown) => {
    const cb = (typeof options === 'function' ? options : callback) as (
      error: NodeJS.ErrnoException | null,
      address: string | dns.LookupAddress[],
      family?: number,
    ) => void;
    const opts = (typeof options === 'object' && options !== null ? options : {}) as dns.LookupOptions;
    lookup(hostname, { ...opts, all: true }, (error, addresses) => {
      if (error) return cb(error, []);
      const list = addresses as dns.LookupAddress[];
      if (list.length === 0 || list.some((a) => isForbiddenAddress(a.address))) {
        const refused: NodeJS.ErrnoException = new Error(`${hostname} resolves to a forbidden address`);
        refused.code = 'forbidden_address';
        return cb(refused, []);
      }
      if (opts.all) return cb(null, list);
      const first = list[0] as dns.LookupAddress;
      return cb(null, first.address, first.family);
    });
  };
  return guarded as unknown as LookupFunction;
}

/**
 * A sender for the deployment's policy. With private targets not allowed, a URL
 * must be https and name a public host; a name's addresses are checked by the
 * guarded lookup at every connection, a literal address (which Node connects to
 * without a lookup) before the request.
 */
export function makeSender(options: SenderOptions): Sender {
  const pool = connectionPool(options.now ?? Date.now);
  if (options.allowPrivateTargets) return (request) => pool.use((agents) => send(request, agents, undefined));
  const lookup = guardedLookup(options.lookup ?? dns.lookup);
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
    const finish = (result: Omit<SendResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, durationMs: Math.round(performance.now() - started) });
    };
    const post = () => {
      let req: http.ClientRequest;
      try {
        const url = new URL(request.url);
        const transport = url.protocol === 'https:' ? https : http;
        req = transport.request(url, {
          method: 'POST',
          headers: { ...request.headers, 'content-length': Buffer.byteLength(request.body) },
          agent: url.protocol === 'https:' ? agents.https : agents.http,
          ...(lookup && { lookup }),
        });
      } catch {
        finish({ statusCode: undefined, error: 'invalid url', retryAfter: undefined, responseSnippet: '' });
        return;
      }
      current = req;
      answer = undefined;
      let answered = false;
      req.on('error', (error: NodeJS.ErrnoException) => {
        // A kept connection that the subscriber closed while it sat idle: nothing was
        // answered on it, so the POST goes again on another one (a new connection,
        // once the pool holds no more kept ones), still within the timeout.
        if (req.reusedSocket && !answered && !settled && STALE_CONNECTION_ERRORS.has(error.code ?? '')) return post();
        finish({ statusCode: undefined, error: error.code ?? 'connection error', retryAfter: undefined, responseSnippet: '' });
      });
      req.on('response', (res) => {
        answered = true;
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
