import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import {
  everyOneAtATime,
  firstMessage,
  InFlight,
  PendingAnswers,
  type SandboxThreadError,
  settled,
  watchThread,
} from '../../sandbox/threads.ts';

/** A real thread that says it is ready, then does `after` (CommonJS, run with eval). */
function thread(after: string): Worker {
  return new Worker(`require('node:worker_threads').parentPort.postMessage({ ready: true }); ${after}`, { eval: true });
}

/** Its exit (events.once would reject on the thread's error event, which is what is under test). */
const exit = (worker: Worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve()));

function failures(worker: Worker, name: string) {
  const seen: SandboxThreadError[] = [];
  const watched = watchThread(worker, name, (error) => seen.push(error));
  return { seen, watched };
}

describe('sandbox threads', () => {
  it('reports a thread that throws after it started, once, by name', async () => {
    const worker = thread(`setTimeout(() => { throw new Error('disk on fire'); }, 20);`);
    await firstMessage(worker, 'emulator');
    const { seen } = failures(worker, 'emulator');
    await exit(worker);
    expect(seen).toHaveLength(1);
    expect(seen[0]?.thread).toBe('emulator');
    expect(seen[0]?.message).toBe("The sandbox's emulator thread stopped: disk on fire");
  });

  it('reports a thread that exits on its own', async () => {
    const worker = thread('setTimeout(() => process.exit(3), 20);');
    await firstMessage(worker, 'API');
    const { seen } = failures(worker, 'API');
    await exit(worker);
    expect(seen.map((e) => e.message)).toEqual(["The sandbox's API thread stopped: it exited with code 3"]);
  });

  it('does not report a thread the sandbox stops', async () => {
    const worker = thread('setInterval(() => {}, 1000);');
    await firstMessage(worker, 'API');
    const { seen, watched } = failures(worker, 'API');
    watched.stopping();
    await worker.terminate();
    expect(seen).toEqual([]);
  });

  it('fails the start of a thread that exits before it is ready, instead of waiting forever', async () => {
    const worker = new Worker('process.exit(2);', { eval: true });
    await expect(firstMessage(worker, 'emulator')).rejects.toThrow(
      "The sandbox's emulator thread stopped: it exited with code 2 before it was ready",
    );
  });
});

describe('questions to another thread', () => {
  it('resolves each question with the answer that carries its id, in whatever order they come', async () => {
    // A real thread that answers its questions in the reverse order.
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads'); const got = [];
       parentPort.on('message', (q) => { got.push(q); if (got.length === 2) for (const g of got.reverse()) parentPort.postMessage({ id: g.id, answer: g.text.toUpperCase() }); });`,
      { eval: true },
    );
    const answers = new PendingAnswers<string>();
    worker.on('message', (message: { id: number; answer: string }) => answers.answer(message.id, message.answer));
    const asked = [
      answers.ask((id) => worker.postMessage({ id, text: 'first' })),
      answers.ask((id) => worker.postMessage({ id, text: 'second' })),
    ];
    expect(await Promise.all(asked)).toEqual(['FIRST', 'SECOND']);
    await worker.terminate();
  });

  it('waits for work under way to settle, failed or not, but no longer than its bound', async () => {
    const order: string[] = [];
    const later = (ms: number, fail: boolean) =>
      new Promise<void>((resolve, reject) =>
        setTimeout(() => {
          order.push(`${ms}`);
          fail ? reject(new Error('failed')) : resolve();
        }, ms),
      );
    expect(await settled([later(30, false), later(60, true)], 5_000)).toBe(true);
    expect(order).toEqual(['30', '60']);

    const started = Date.now();
    expect(await settled([later(10, false), new Promise(() => undefined)], 100)).toBe(false);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(await settled([], 100)).toBe(true);
  });

  it('waits for the work it tracks that is still under way, and forgets what settled', async () => {
    const work = new InFlight();
    let finish: () => void = () => undefined;
    const pending = work.track(
      new Promise<void>((resolve) => {
        finish = resolve;
      }),
    );
    await work.track(Promise.resolve('done'));
    await expect(work.track(Promise.reject(new Error('failed')))).rejects.toThrow('failed');
    expect(await work.settled(100)).toBe(false);
    finish();
    await pending;
    expect(await work.settled(100)).toBe(true);
  });
});

describe('scheduled functions', () => {
  it('never start a run while the last one is still under way: that tick is a throttle, as with a reserved concurrency of 1', async () => {
    let running = 0;
    let most = 0;
    let runs = 0;
    let throttles = 0;
    const schedule = everyOneAtATime(
      20,
      async () => {
        runs++;
        running++;
        most = Math.max(most, running);
        // A slow run: several ticks long, and failing.
        await new Promise((resolve) => setTimeout(resolve, 70));
        running--;
        throw new Error('slow and failed');
      },
      () => throttles++,
      { startNow: true },
    );
    // The first run starts at once, not a tick later.
    expect(runs).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    schedule.stop();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(most).toBe(1);
    expect(runs).toBeGreaterThan(1);
    expect(throttles).toBeGreaterThan(0);
  });
});

describe('a scheduled run that never ends', () => {
  it('ends at the function timeout, as Lambda ends it: the next ticks run again instead of all being throttled', async () => {
    let runs = 0;
    let throttles = 0;
    let timeouts = 0;
    const schedule = everyOneAtATime(
      20,
      () => {
        runs++;
        // The first run hangs (a call that never answers); the later ones are quick.
        return runs === 1 ? new Promise<never>(() => undefined) : Promise.resolve();
      },
      () => throttles++,
      { startNow: true, timeoutMs: 70, onTimeout: () => timeouts++ },
    );
    await new Promise((resolve) => setTimeout(resolve, 400));
    schedule.stop();
    // Throttled only while the hung run was within its timeout, then counted as a timeout once.
    expect(timeouts).toBe(1);
    expect(throttles).toBeGreaterThan(0);
    expect(throttles).toBeLessThan(5);
    expect(runs).toBeGreaterThan(5);
  });
});
