/**
 * The hot-object scenario's control for the machine: an HTTP server that is not
 * sluice, which the same flood (same process, priority, requests and clients) hits
 * instead of the API. It reads each request and answers 429 at once, with the body
 * API Gateway's usage-plan throttle answers, so it does no more than any API must do
 * for a request it refuses. The calm tenant's p99 while it is flooded is what a flood
 * of that shape costs everyone else on this machine, whatever answers it: the storm's
 * p99 over it is what sluice's own handling of the flood costs them.
 *
 * It runs on a thread of the bench's process at normal priority, as the sandbox's API
 * does. This file is both ends: `startBystander` starts a worker on this same file.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { answerThrottled } from '../sandbox/gateway.ts';

interface ThreadData {
  /** Tells this file, loaded on a worker, that it is the bystander's worker. */
  readonly sluiceBystander: true;
}

export interface Bystander {
  readonly url: string;
  /** Requests it answered so far. */
  requests(): Promise<number>;
  stop(): Promise<void>;
}

export async function startBystander(): Promise<Bystander> {
  const worker = new Worker(new URL(import.meta.url), {
    workerData: { sluiceBystander: true } satisfies ThreadData,
    name: 'bench-bystander',
  });
  const url = await new Promise<string>((resolve, reject) => {
    worker.once('message', (message: { url: string }) => resolve(message.url));
    worker.once('error', reject);
  });
  return {
    url,
    requests: () =>
      new Promise<number>((resolve) => {
        worker.once('message', (message: { requests: number }) => resolve(message.requests));
        worker.postMessage('count');
      }),
    async stop() {
      await worker.terminate();
    },
  };
}

function serve(): void {
  let requests = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests++;
      // What a throttled request gets from the sandbox's usage plan (sandbox/gateway.ts).
      answerThrottled(res, 1);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    parentPort?.postMessage({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  });
  parentPort?.on('message', () => parentPort?.postMessage({ requests }));
}

if (!isMainThread && (workerData as Partial<ThreadData> | undefined)?.sluiceBystander === true) serve();
