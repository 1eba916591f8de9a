import { defineConfig } from 'vitest/config';

// Two projects: unit tests need nothing running; integration tests get one real Redis and one
// real MariaDB for the whole run from the global setup (each file then takes its own schema and
// Redis prefix, see test/support/testEnv.ts).
export default defineConfig({
  test: {
    reporters: ['default', 'json'],
    outputFile: { json: 'test-artifacts/vitest-results.json' },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/globalSetup.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: 'forks',
        },
      },
    ],
  },
});
