/** Bounded concurrency for the stages' sweeps over many items. */

/**
 * Works on the items `limit` at a time, in order, while `go()` answers true: answers how
 * many it started (the rest are the caller's to leave for later). A failed item stops
 * the others from starting more, and its error is the answer.
 */
export async function eachAtOnce<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
  go: () => boolean = () => true,
): Promise<number> {
  let next = 0;
  let failed = false;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (!failed && next < items.length && go()) {
        try {
          await work(items[next++] as T);
        } catch (error) {
          failed = true;
          throw error;
        }
      }
    }),
  );
  return next;
}
