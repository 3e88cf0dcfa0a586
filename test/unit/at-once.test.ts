import { describe, expect, it } from 'vitest';
import { eachAtOnce } from '../../functions/core/at-once.ts';

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 1));

describe('eachAtOnce', () => {
  it('works on every item, at most `limit` at once, starting them in order', async () => {
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const done = await eachAtOnce([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      started.push(n);
      running++;
      peak = Math.max(peak, running);
      await tick();
      running--;
    });
    expect(done).toBe(7);
    expect(started).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(peak).toBe(3);
  });

  it('starts no more once `go` answers false, and answers how many it started', async () => {
    let budget = 4;
    const done = await eachAtOnce(
      [1, 2, 3, 4, 5, 6],
      2,
      async () => tick(),
      () => budget-- > 0,
    );
    expect(done).toBe(4);
  });

  it('answers the error of a failed item, and starts no more items after it', async () => {
    const started: number[] = [];
    const failing = eachAtOnce([1, 2, 3, 4, 5, 6], 2, async (n) => {
      started.push(n);
      await tick();
      if (n === 2) throw new Error('refused');
    });
    await expect(failing).rejects.toThrow('refused');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(started).toEqual([1, 2, 3]);
  });
});
