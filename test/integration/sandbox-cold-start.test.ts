/**
 * A sandbox started on a SLUICE_DATA_DIR that an earlier sandbox did not stop cleanly
 * (killed, out of memory, its container stopped hard) takes the folder over; one that
 * another sandbox of this process still has is refused.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataDirInUseError } from '../../sandbox/data-dir.ts';
import { startSandbox } from '../../sandbox/sandbox.ts';

describe('a sandbox on the data folder of one that did not stop', () => {
  it('starts when the folder names its own process id, as a container restarted after a hard stop gives the same process the same id', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pid-'));
    // What a sandbox killed with SIGKILL leaves behind, in a container whose processes
    // start in the same order each time: the id this process now has.
    writeFileSync(join(dataDir, 'sandbox.pid'), String(process.pid));

    const sandbox = await startSandbox({ port: 0, dataDir, canary: false });
    await sandbox.stop();
  });

  it('is still refused while another sandbox of this process has the folder', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pid-'));
    const first = await startSandbox({ port: 0, dataDir, canary: false });
    try {
      await expect(startSandbox({ port: 0, dataDir, canary: false })).rejects.toThrow(DataDirInUseError);
    } finally {
      await first.stop();
    }
  });
});
