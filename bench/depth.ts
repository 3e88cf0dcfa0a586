/**
 * hot-object's peak depth: the bench reads the hot object's meta item every 200 ms
 * while the flood runs. It reads on a client of its own that the accounting does not
 * count: these reads are the bench's, not the pipeline's, and on the sandbox's own
 * client they showed in the scenario's calls as about 300 GetItem of the hot object's
 * meta item that sluice never made.
 */
import { documentClient } from '../functions/adapters/aws.ts';
import { QueueStore } from '../functions/adapters/queue-store.ts';
import type { ObjectKey } from '../functions/core/model.ts';
import type { Sandbox } from '../sandbox/sandbox.ts';

/** Reads `key`'s depth every `everyMs` until stopped; `stop` answers the highest depth read. */
export function sampleDepth(sandbox: Pick<Sandbox, 'emulators' | 'wiring'>, key: ObjectKey, everyMs = 200) {
  const queue = new QueueStore({
    client: documentClient({ ...sandbox.emulators.dynamo }),
    tableName: sandbox.wiring.eventsTable,
    retentionDays: 7,
  });
  let peak = 0;
  let sampling = true;
  const done = (async () => {
    while (sampling) {
      peak = Math.max(peak, (await queue.readMeta(key))?.depth ?? 0);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    async stop(): Promise<number> {
      sampling = false;
      await done;
      return peak;
    },
  };
}
