/** Time source, injectable so schedule logic can be tested exactly. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
