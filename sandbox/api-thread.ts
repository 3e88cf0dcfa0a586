/**
 * The API on a thread of its own, inside the sandbox's process. In AWS, API
 * Gateway and the ingest function never share a CPU with the distributor and
 * delivery functions, so a producer flooding the API slows nobody's deliveries; on
 * one thread the sandbox would make every delivery wait behind the flood's requests.
 *
 * This file is both ends: `startApiOnThread` (the sandbox's side) starts a worker on
 * this same file, which serves the API and sends what it records back: metrics
 * points, notices, invocations and (when observed) AWS calls. It asks the sandbox
 * for alarm states and notices, which live with the metrics.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { WebhookDisabledNotice } from '../functions/app/delivery/deps.ts';
import type { MetricsPort } from '../functions/core/telemetry.ts';
import { type ApiSettings, startApiServer } from './api-server.ts';
import type { CallObserver, ObservedCall } from './observe.ts';
import { failStartOnStop, PendingAnswers, type SandboxThreadError, watchThread } from './threads.ts';

interface ThreadData {
  /** Tells this file, loaded on a worker, that it is the API's worker (not some other). */
  readonly sluiceApi: true;
  readonly settings: ApiSettings;
  readonly observe: boolean;
  readonly invocations: boolean;
}

type FromApi =
  | { readonly cmd: 'ready'; readonly port: number }
  | { readonly cmd: 'failed'; readonly message: string }
  | { readonly cmd: 'batch'; readonly reports: readonly Report[] }
  | { readonly cmd: 'ask'; readonly id: number; readonly what: 'alarms' | 'notices' }
  | { readonly cmd: 'stopped' };

/** What the API records, sent in batches: one message per request, not one per data point. */
type Report =
  | { readonly cmd: 'count'; readonly name: string; readonly value: number; readonly dimensions?: Readonly<Record<string, string>> }
  | { readonly cmd: 'record'; readonly key: string; readonly value: number }
  | { readonly cmd: 'notice'; readonly notice: WebhookDisabledNotice }
  | { readonly cmd: 'invocation'; readonly fn: string; readonly ms: number }
  | { readonly cmd: 'call'; readonly call: ObservedCall };

type ToApi = { readonly cmd: 'answer'; readonly id: number; readonly data: unknown[] } | { readonly cmd: 'stop' };

/** What the sandbox's side receives from the API, and answers it. */
export interface ApiThreadPorts {
  readonly metrics: MetricsPort & { record(key: string, value: number): void };
  readonly notice: (notice: WebhookDisabledNotice) => void;
  readonly alarms: () => unknown[];
  readonly notices: () => unknown[];
  readonly onInvocation?: (fn: string, durationMs: number) => void;
  readonly onCall?: CallObserver;
  /** The thread stopped on its own after it started (see threads.ts). */
  readonly onFailure: (error: SandboxThreadError) => void;
}

export interface ApiThread {
  readonly port: number;
  stop(): Promise<void>;
}

export async function startApiOnThread(settings: ApiSettings, ports: ApiThreadPorts): Promise<ApiThread> {
  const data: ThreadData = {
    sluiceApi: true,
    settings,
    observe: ports.onCall !== undefined,
    invocations: ports.onInvocation !== undefined,
  };
  const worker = new Worker(new URL(import.meta.url), { workerData: data, name: 'sluice-api' });
  const send = (message: ToApi) => worker.postMessage(message);
  let stopped: (() => void) | undefined;
  const take = (report: Report) => {
    switch (report.cmd) {
      case 'count':
        ports.metrics.count(report.name, report.value, report.dimensions);
        break;
      case 'record':
        ports.metrics.record(report.key, report.value);
        break;
      case 'notice':
        ports.notice(report.notice);
        break;
      case 'invocation':
        ports.onInvocation?.(report.fn, report.ms);
        break;
      case 'call':
        ports.onCall?.(report.call);
        break;
    }
  };
  const port = await new Promise<number>((resolve, reject) => {
    const ready = failStartOnStop(worker, 'API', reject);
    worker.on('message', (message: FromApi) => {
      switch (message.cmd) {
        case 'ready':
          ready();
          resolve(message.port);
          break;
        case 'failed':
          reject(new Error(`The sandbox API did not start: ${message.message}`));
          break;
        case 'batch':
          for (const report of message.reports) take(report);
          break;
        case 'ask':
          send({ cmd: 'answer', id: message.id, data: message.what === 'alarms' ? ports.alarms() : ports.notices() });
          break;
        case 'stopped':
          stopped?.();
          break;
      }
    });
  });
  const watched = watchThread(worker, 'API', ports.onFailure);
  return {
    port,
    async stop() {
      watched.stopping();
      await new Promise<void>((resolve) => {
        stopped = resolve;
        send({ cmd: 'stop' });
      });
      await worker.terminate();
    },
  };
}

async function serveOnThisThread(): Promise<void> {
  const parent = parentPort;
  if (!parent) return;
  const { settings, observe, invocations } = workerData as ThreadData;
  const post = (message: FromApi) => parent.postMessage(message);
  const asked = new PendingAnswers<unknown[]>();
  const ask = (what: 'alarms' | 'notices') => asked.ask((id) => post({ cmd: 'ask', id, what }));
  // Reports wait for the end of the request (api-server.ts flushes them before it
  // answers) or of this turn of the event loop, whichever comes first.
  let reports: Report[] = [];
  const flush = () => {
    if (reports.length === 0) return;
    post({ cmd: 'batch', reports });
    reports = [];
  };
  const report = (r: Report) => {
    if (reports.length === 0) setImmediate(flush);
    reports.push(r);
  };
  const metrics: MetricsPort = {
    count: (name, value = 1, dimensions) => report({ cmd: 'count', name, value, ...(dimensions && { dimensions }) }),
  };
  try {
    const server = await startApiServer(settings, {
      metrics,
      record: (key, value) => report({ cmd: 'record', key, value }),
      flush,
      notifier: { webhookDisabled: async (notice) => report({ cmd: 'notice', notice }) },
      alarms: () => ask('alarms'),
      notices: () => ask('notices'),
      ...(invocations && { onInvocation: (fn: string, ms: number) => report({ cmd: 'invocation', fn, ms }) }),
      ...(observe && { onCall: (call: ObservedCall) => report({ cmd: 'call', call }) }),
    });
    parent.on('message', async (message: ToApi) => {
      if (message.cmd === 'answer') {
        asked.answer(message.id, message.data);
        return;
      }
      await server.stop();
      post({ cmd: 'stopped' });
    });
    post({ cmd: 'ready', port: server.port });
  } catch (error) {
    post({ cmd: 'failed', message: error instanceof Error ? error.message : String(error) });
  }
}

if (!isMainThread && (workerData as Partial<ThreadData> | undefined)?.sluiceApi === true) await serveOnThisThread();
