/**
 * The sandbox's worker threads (the emulators, the API) and what happens when one
 * stops on its own. Such a sandbox is half alive: the API refuses connections, or
 * every AWS call the functions make fails, while the process runs on. So a thread
 * that errs or exits while the sandbox is not stopping it is reported, once, with
 * its name; `npm start` then exits (sandbox/main.ts).
 */
import type { Worker } from 'node:worker_threads';

export class SandboxThreadError extends Error {
  /** Which thread: `emulator` or `API`. */
  readonly thread: string;

  constructor(thread: string, reason: string) {
    super(`The sandbox's ${thread} thread stopped: ${reason}`);
    this.name = 'SandboxThreadError';
    this.thread = thread;
  }
}

export interface WatchedThread {
  /** The sandbox is stopping the thread itself: its exit is not a failure. */
  stopping(): void;
}

/** Reports the thread's first uncaught error, or its exit, unless `stopping()` came first. */
export function watchThread(worker: Worker, thread: string, onFailure: (error: SandboxThreadError) => void): WatchedThread {
  let expected = false;
  let reported = false;
  const report = (reason: string) => {
    if (expected || reported) return;
    reported = true;
    onFailure(new SandboxThreadError(thread, reason));
  };
  worker.on('error', (error: Error) => report(error.message));
  worker.on('exit', (code: number) => report(`it exited with code ${code}`));
  return {
    stopping() {
      expected = true;
    },
  };
}

/**
 * Rejects with the thread's error, or its exit, while it starts: an exit before it
 * is ready would otherwise leave the start waiting forever. Call the answer once it
 * is ready.
 */
export function failStartOnStop(worker: Worker, thread: string, reject: (error: SandboxThreadError) => void): () => void {
  const failed = (error: Error) => reject(new SandboxThreadError(thread, error.message));
  const exited = (code: number) => reject(new SandboxThreadError(thread, `it exited with code ${code} before it was ready`));
  worker.once('error', failed);
  worker.once('exit', exited);
  return () => {
    worker.off('error', failed);
    worker.off('exit', exited);
  };
}

/** The first message a starting thread sends (its endpoints), or why none came. */
export function firstMessage<T>(worker: Worker, thread: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const ready = failStartOnStop(worker, thread, reject);
    worker.once('message', (message: T) => {
      ready();
      resolve(message);
    });
  });
}

/**
 * Questions sent to another thread, each answered by a message that carries its id:
 * `ask` sends one and resolves with its answer, which the port's message handler
 * hands to `answer`.
 */
export class PendingAnswers<T> {
  readonly #waiting = new Map<number, (answer: T) => void>();
  #nextId = 0;

  /** Sends a question with a fresh id (through `send`) and waits for its answer. */
  ask(send: (id: number) => void): Promise<T> {
    return new Promise<T>((resolve) => {
      const id = this.#nextId++;
      this.#waiting.set(id, resolve);
      send(id);
    });
  }

  /** The answer to question `id` came. */
  answer(id: number, answer: T): void {
    this.#waiting.get(id)?.(answer);
    this.#waiting.delete(id);
  }
}

/**
 * Work under way that stopping waits for: `track` each piece as it starts, and
 * `settled` before closing what it uses. Settled pieces are forgotten.
 */
export class InFlight {
  readonly #work = new Set<Promise<unknown>>();

  /** Answers `work` itself. */
  track<T>(work: Promise<T>): Promise<T> {
    this.#work.add(work);
    void work.finally(() => this.#work.delete(work)).catch(() => undefined);
    return work;
  }

  /** Waits for the work under way, at most `maxMs` (see `settled`). */
  settled(maxMs: number): Promise<boolean> {
    return settled(this.#work, maxMs);
  }
}

/**
 * Waits until every promise of `work` has settled, or `maxMs` has passed, whichever
 * comes first: what stopping does with the work still under way. Answers whether all settled.
 */
export async function settled(work: Iterable<Promise<unknown>>, maxMs: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), maxMs);
  });
  try {
    return await Promise.race([Promise.allSettled([...work]).then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Lambda's error for an invocation still running at its function's timeout. */
export class TimedOut extends Error {
  constructor(timeoutSeconds: number) {
    super(`Task timed out after ${timeoutSeconds.toFixed(2)} seconds`);
  }
}

/**
 * The invocation's answer, or TimedOut once the function's timeout has passed. Lambda
 * then stops the invocation: its concurrency is free (and an SQS batch is not deleted).
 * Here its promise cannot be stopped, so what it answers later is ignored; the timer
 * does not keep the process alive.
 */
export function endsAt<T>(invocation: Promise<T>, timeoutSeconds: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimedOut(timeoutSeconds)), timeoutSeconds * 1000);
    timer.unref();
  });
  return Promise.race([invocation, timedOut]).finally(() => clearTimeout(timer));
}

/**
 * Runs `run` every `intervalMs`, as EventBridge invokes a scheduled function whose
 * reserved concurrency is 1: a tick that comes while a run is still under way starts
 * no second run beside it (Lambda throttles that invocation), and is told to
 * `onThrottle`. `startNow` runs it at once too. A run still going after `timeoutMs`
 * (the function's timeout) is ended there, as Lambda ends it, and told to
 * `onTimeout`: the next tick starts a run again, where one run that never ended would
 * have every later tick throttled for good. (Its promise cannot be stopped: what it
 * does later is ignored.) `stop` ends the ticks; a run under way goes on.
 */
export function everyOneAtATime(
  intervalMs: number,
  run: () => Promise<unknown>,
  onThrottle: () => void,
  options: { startNow?: boolean; timeoutMs?: number; onTimeout?: () => void } = {},
): { stop(): void } {
  let running: object | undefined;
  const tick = () => {
    if (running) {
      onThrottle();
      return;
    }
    const current = {};
    running = current;
    const invocation = options.timeoutMs === undefined ? run() : endsAt(run(), options.timeoutMs / 1000);
    void invocation
      .catch((error: unknown) => {
        if (error instanceof TimedOut) options.onTimeout?.();
      })
      .finally(() => {
        if (running === current) running = undefined;
      });
  };
  const timer = setInterval(tick, intervalMs);
  if (options.startNow) tick();
  return { stop: () => clearInterval(timer) };
}
