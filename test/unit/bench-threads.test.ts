import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { threadCpu } from '../../bench/threads.ts';

/** A thread named as the bench names its threads, spinning on a core for `ms`. */
async function spin(name: string, ms: number): Promise<void> {
  const worker = new Worker(`const end = Date.now() + ${ms}; while (Date.now() < end) {}`, { eval: true, name });
  await new Promise((resolve) => worker.once('exit', resolve));
}

describe('benchmark thread CPU', () => {
  it("names the cores each thread kept busy by the thread's role", async () => {
    const cpu = threadCpu(100);
    const from = Date.now();
    await spin('sluice-emulators', 700);
    await new Promise((resolve) => setTimeout(resolve, 250));
    const to = Date.now();
    cpu.stop();

    const cores = cpu.cores(from, to);

    // Spinning for 700 ms of a window of about 1 s: well above nothing even when other
    // test files share the cores, and never more than the one core a thread can use.
    expect(cores?.emulators).toBeGreaterThan(0.1);
    expect(cores?.emulators).toBeLessThanOrEqual(1);
    expect(cores?.total).toBeGreaterThanOrEqual(cores?.emulators ?? Number.POSITIVE_INFINITY);
  });

  it('keeps publishers apart by label, and answers null for a window it did not sample', async () => {
    const cpu = threadCpu(100);
    const from = Date.now();
    await spin('pub-hot', 400);
    await new Promise((resolve) => setTimeout(resolve, 250));
    cpu.stop();

    expect(cpu.cores(from, Date.now())?.['publisher hot']).toBeGreaterThan(0.1);
    expect(cpu.cores(from - 60_000, from - 30_000)).toBeNull();
  });
});
