# securechat phonebook image: `securechat serve` (HTTPS directory + CA + Roughtime) with its data on a volume.
#
#   docker build -t securechat .                      the compiled binary (default; needs network at build time:
#                                                     `deno compile` downloads its runtime, denort)
#   docker build --target deno-run -t securechat .    no compile: runs main.ts with `deno run` (as before)
#   docker run -d -p 10040:10040/tcp -p 2002:2002/udp -v securechat-data:/data securechat --hostname chat.example.org
#
# Admin commands run in the same container (or one sharing the volume / the database):
#   docker exec CONTAINER securechat serve invite --data /data
#   docker exec CONTAINER securechat serve revoke NAME --data /data
# (in the deno-run image: deno run --allow-read=/app,/data --allow-write=/data --allow-env main.ts serve ...)
# The CA fingerprint users need is printed at the first start (docker logs). Several nodes over one
# PostgreSQL database: see docker-compose.yml and docs/usage-serve.md.

# ---- build: dependencies exactly as locked, then the executable for this image's platform ----
FROM node:22-bookworm-slim AS build
# Deno comes from its npm package (the binary is inside it).
RUN npm install -g deno@2.9.6 && deno --version
ENV DENO_DIR=/app/.deno NO_COLOR=1 RUST_BACKTRACE=0
WORKDIR /app
COPY deno.json deno.lock ./
COPY main.ts cli_error.ts ./
COPY pki ./pki
COPY server ./server
COPY clock ./clock
COPY client ./client
COPY release ./release
RUN deno install --frozen && deno cache main.ts
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "no securechat target for ${TARGETARCH}" >&2; exit 1 ;; \
    esac && \
    deno run --allow-run --allow-read --allow-write --allow-env release/compile.ts --target "$target" --out /out && \
    mv "/out/securechat-$target" /out/securechat && /out/securechat --version

# ---- deno-run: the program as source, run by deno (no compile step) ----
FROM node:22-bookworm-slim AS deno-run
RUN npm install -g deno@2.9.6 && deno --version
ENV DENO_DIR=/app/.deno SECURECHAT_DATA=/data NO_COLOR=1 RUST_BACKTRACE=0
WORKDIR /app
RUN mkdir -p /data /ca /app/.deno && chown -R node:node /app /data /ca
USER node
COPY --chown=node:node deno.json deno.lock ./
COPY --chown=node:node main.ts cli_error.ts ./
COPY --chown=node:node pki ./pki
COPY --chown=node:node server ./server
COPY --chown=node:node clock ./clock
COPY --chown=node:node client ./client
RUN deno install --frozen && deno cache main.ts
VOLUME ["/data"]
EXPOSE 10040/tcp 2002/udp
# Narrow permissions: network for the listeners and the database, read the code, the data folder and the
# shared CA folder, write only those two. Environment access stays open because npm packages read assorted
# variables; no secret is in the environment unless you pass one (prefer the *_FILE variables).
ENTRYPOINT ["deno", "run", "--no-prompt", "--allow-net", \
  "--allow-read=/app,/data,/ca,/run/secrets", "--allow-write=/data,/ca", "--allow-env", "--allow-sys", \
  "main.ts", "serve", "--data", "/data", "--listen", "0.0.0.0:10040", "--roughtime-listen", "0.0.0.0:2002"]
CMD []

# ---- default: the compiled executable on a small glibc base ----
FROM debian:bookworm-slim AS compiled
RUN useradd --system --uid 10001 --home-dir /data securechat && mkdir -p /data /ca && \
    chown securechat /data /ca && chmod 700 /data /ca
COPY --from=build /out/securechat /usr/local/bin/securechat
ENV SECURECHAT_DATA=/data NO_COLOR=1 RUST_BACKTRACE=0
USER securechat
VOLUME ["/data"]
EXPOSE 10040/tcp 2002/udp
# The permissions are those compiled in (network, files, environment, system info: release/compile.ts).
ENTRYPOINT ["securechat", "serve", "--data", "/data", "--listen", "0.0.0.0:10040", "--roughtime-listen", "0.0.0.0:2002"]
# Extra flags (e.g. --hostname chat.example.org --invite-only) are appended by `docker run IMAGE ...`.
CMD []
