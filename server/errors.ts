/** The directory's API errors: an HTTP status and a stable code, sent as {"error": {"code", "message"}}. */
import { CodedError } from "../coded_error.ts";
export type ApiErrorCode =
  | "BAD_REQUEST"
  | "BAD_JSON"
  | "BAD_USERNAME"
  | "MALFORMED_CSR"
  | "BAD_CSR_SIGNATURE"
  | "CSR_NAME_MISMATCH"
  | "UNSUPPORTED_KEY"
  | "BAD_ADDRESS"
  | "UNAUTHENTICATED"
  | "FORBIDDEN"
  | "LAPSED_NEW_KEY"
  | "BAD_TOKEN"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "NAME_TAKEN"
  | "TIMEOUT"
  | "BODY_TOO_LARGE"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "RATE_LIMITED"
  | "INTERNAL";

export class ApiError extends CodedError<ApiErrorCode> {
  constructor(readonly status: number, code: ApiErrorCode, message: string) {
    super(code, message);
  }
}

/** Errors of the server's own setup (data folder, CA key). */
export class ServerSetupError
  extends CodedError<"BAD_DATA_DIR" | "CA_KEY" | "CA_CERT" | "NO_SUCH_USER" | "DATABASE"> {}
