/**
 * Sends one signed POST to a subscriber. Redirects are not followed, the whole
 * exchange is bounded by the timeout, and at most a few KiB of the answer is read.
 */
import http from 'node:http';
import https from 'node:https';

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

export const sendWebhook: Sender = (request) =>
  new Promise((resolve) => {
    const started = performance.now();
    let settled = false;
    const finish = (result: Omit<SendResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, durationMs: Math.round(performance.now() - started) });
    };
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      finish({ statusCode: undefined, error: 'invalid url', retryAfter: undefined, responseSnippet: '' });
      return;
    }
    const transport = url.protocol === 'https:' ? https : http;
    const req = transport.request(url, {
      method: 'POST',
      headers: { ...request.headers, 'content-length': Buffer.byteLength(request.body) },
      agent: false,
    });
    const timer = setTimeout(() => {
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
