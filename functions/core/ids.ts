import { randomBytes } from 'node:crypto';

export type IdPrefix = 'ten' | 'evt' | 'wh' | 'msg' | 'att' | 'sw';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * A prefixed id: a millisecond timestamp (so ids sort roughly by creation) and
 * 80 random bits, e.g. `evt_0mhkq3b1c_5k2x9d7f0a1b3c4e`.
 */
export function newId(prefix: IdPrefix, now: number = Date.now(), random: (n: number) => Buffer = randomBytes): string {
  const bytes = random(10);
  let tail = '';
  for (const byte of bytes) tail += ALPHABET[byte % 36];
  return `${prefix}_${now.toString(36).padStart(9, '0')}${tail}`;
}

const ID_PATTERN = /^(ten|evt|wh|msg|att|sw)_[0-9a-z]{19}$/;

export function isId(prefix: IdPrefix, value: string): boolean {
  const match = ID_PATTERN.exec(value);
  return match !== null && match[1] === prefix;
}
