/**
 * Sends one signed POST to a subscriber. Redirects are not followed, the whole
 * exchange is bounded by the timeout, and at most a few KiB of the answer is read.
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

export type Sender = (request: SendRequest) => Promise<SendResult>;

type LookupFunction = typeof dns.lookup;

export interface SenderOptions {
  /** Allow http:// and private, loopback and link-local targets (the sandbox). */
  readonly allowPrivateTargets: boolean;
  /** DNS lookup to use; tests inject one. */
  readonly lookup?: LookupFunction;
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
  if (options.allowPrivateTargets) return (request) => send(request, undefined);
  const lookup = guardedLookup(options.lookup ?? dns.lookup);
  return async (request) => {
    const refusal = refuseTarget(request.url);
    if (refusal) return { statusCode: undefined, durationMs: 0, error: refusal, retryAfter: undefined, responseSnippet: '' };
    return send(request, lookup);
  };
}

/** The short code for a URL that must not be requested, or undefined (an unparseable URL is left to `send`). */
function refuseTarget(url: string): 'https_required' | 'forbidden_address' | undefined {
  if (!URL.canParse(url)) return undefined;
  if (new URL(url).protocol !== 'https:') return 'https_required';
  return checkTargetUrl(url, false) ? 'forbidden_address' : undefined;
}

function send(request: SendRequest, lookup: LookupFunction | undefined): Promise<SendResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    let settled = false;
    // Declared before anything can finish: a URL or request refused before the timer
    // is set must resolve as a failed attempt, not throw (the delivery would fail as
    // an unexpected error and SQS would deliver it again and again).
    let timer: NodeJS.Timeout | undefined;
    const finish = (result: Omit<SendResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, durationMs: Math.round(performance.now() - started) });
    };
    let req: http.ClientRequest;
    try {
      const url = new URL(request.url);
      const transport = url.protocol === 'https:' ? https : http;
      req = transport.request(url, {
        method: 'POST',
        headers: { ...request.headers, 'content-length': Buffer.byteLength(request.body) },
        // No connection reuse: every delivery connects, and so is checked, afresh.
        agent: false,
        ...(lookup && { lookup }),
      });
    } catch {
      finish({ statusCode: undefined, error: 'invalid url', retryAfter: undefined, responseSnippet: '' });
      return;
    }
    timer = setTimeout(() => {
      finish({ statusCode: undefined, error: `no answer within ${request.timeoutMs} ms`, retryAfter: undefined, responseSnippet: '' });
      req.destroy();
    }, request.timeoutMs);
    req.on('error', (error: NodeJS.ErrnoException) => {
      finish({ statusCode: undefined, error: error.code ?? 'connection error', retryAfter: undefined, responseSnippet: '' });
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => {
        const retryAfter = res.headers['retry-after'];
        finish({
          statusCode: res.statusCode,
          error: undefined,
          retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
          responseSnippet: Buffer.concat(chunks).toString('utf8').slice(0, 200),
        });
        res.destroy();
      };
      res.on('data', (chunk: Buffer) => {
        if (size < MAX_RESPONSE_BYTES) chunks.push(chunk.subarray(0, MAX_RESPONSE_BYTES - size));
        size += chunk.length;
        if (size >= MAX_RESPONSE_BYTES) done();
      });
      res.on('end', done);
      res.on('error', done);
    });
    req.end(request.body);
  });
}
