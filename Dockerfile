# securechat directory: `securechat serve` (HTTPS directory + CA + Roughtime) with its data on a volume.
#   docker build -t securechat .
#   docker run -d -p 10040:10040/tcp -p 2002:2002/udp -v securechat-data:/data securechat --hostname chat.example.org
# Admin commands run in the same container (or one sharing the volume):
#   docker exec CONTAINER deno run --allow-read=/app,/data --allow-write=/data --allow-env main.ts \
#     serve invite --data /data
#   docker exec CONTAINER deno run --allow-read=/app,/data --allow-write=/data --allow-env main.ts \
#     serve revoke NAME --data /data
# The CA fingerprint users need is printed at the first start (docker logs).
FROM node:22-bookworm-slim

# Deno comes from its npm package (the binary is inside it); no other download at build or run time.
RUN npm install -g deno@2.9.6 && deno --version

ENV DENO_DIR=/app/.deno \
    SECURECHAT_DATA=/data \
    NO_COLOR=1 \
    RUST_BACKTRACE=0
WORKDIR /app
RUN mkdir -p /data /app/.deno && chown -R node:node /app /data
USER node

# Dependencies first (cached layer), exactly as locked.
COPY --chown=node:node deno.json deno.lock ./
COPY --chown=node:node main.ts cli_error.ts ./
COPY --chown=node:node pki ./pki
COPY --chown=node:node server ./server
COPY --chown=node:node clock ./clock
COPY --chown=node:node client ./client
RUN deno install --frozen && deno cache main.ts

VOLUME ["/data"]
EXPOSE 10040/tcp 2002/udp

# Narrow permissions: network only on the two listening ports, read the code and the data folder, write only
# the data folder. Environment access stays open because npm packages loaded by main.ts read assorted
# variables; no secret is in the environment unless you pass SECURECHAT_CA_PASSPHRASE.
ENTRYPOINT ["deno", "run", "--no-prompt", \
  "--allow-net=0.0.0.0:10040,0.0.0.0:2002", \
  "--allow-read=/app,/data", "--allow-write=/data", "--allow-env", \
  "main.ts", "serve", "--data", "/data", "--listen", "0.0.0.0:10040", "--roughtime-listen", "0.0.0.0:2002"]
# Extra flags (e.g. --hostname chat.example.org --invite-only) are appended by `docker run IMAGE ...`.
CMD []
