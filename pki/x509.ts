/**
 * The one place that loads @peculiar/x509: its decorators need `reflect-metadata` loaded first, and it must be
 * told which WebCrypto to use before any certificate is parsed or made.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };
