# syntax=docker/dockerfile:1
# Multi-stage: dependencies are installed in a build stage; the runtime image holds only
# production dependencies and runs as an unprivileged user.
FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
RUN groupadd --system mvsched && useradd --system --gid mvsched --home /app mvsched
COPY --from=deps /app/node_modules ./node_modules
COPY package.json knexfile.js ./
COPY bin ./bin
COPY src ./src
COPY workers ./workers
COPY migrations ./migrations
USER mvsched
EXPOSE 8080
ENTRYPOINT ["node", "bin/mvsched.js"]
CMD ["--help"]
