import { describe, expect, it } from 'vitest';
import { loopDelay } from '../../bench/loop-delay.ts';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('benchmark loop delay', () => {
  it("reads the thread's longest stall per window, and nothing for a window it did not read", async () => {
    const delay = loopDelay(100);
    const start = Date.now();
    await pause(350);
    const calmEnd = Date.now();
    // A synchronous step that keeps the thread from everything else for 80 ms.
    const until = Date.now() + 80;
    while (Date.now() < until) {
      // busy
    }
    await pause(250);
    const end = Date.now();
    delay.stop();

    const stalled = delay.window(calmEnd, end);
    expect(stalled?.max_ms).toBeGreaterThanOrEqual(60);
    expect(stalled?.stalled_seconds).toBeGreaterThanOrEqual(1);
    expect(delay.window(start, calmEnd)).not.toBeNull();
    expect(delay.window(end + 10_000, end + 20_000)).toBeNull();
  });

  it("reads how late the thread ran, not the monitor's own 10 ms between its looks", async () => {
    // Node's histogram records the whole time between two of its timer's ticks, the
    // 10 ms it waits on purpose included: an idle thread read 10–14 ms, and every
    // 10 ms stall passed for one of 20.
    const delay = loopDelay(100);
    const start = Date.now();
    await pause(450);
    const end = Date.now();
    delay.stop();

    expect(delay.window(start, end)?.max_ms).toBeLessThan(10);
    expect(delay.window(start, end)?.stalled_seconds).toBe(0);
  });
});
