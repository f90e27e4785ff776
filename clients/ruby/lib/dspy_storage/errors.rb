# frozen_string_literal: true

module DSPyStorage
  # The base of every error the client raises for an answer of the service (or for the lack of one).
  # +status+ is the HTTP status (nil when no answer arrived), +code+ the API's machine code,
  # +field+ the offending input when the service named one.
  class Error < StandardError
    attr_reader :status, :code, :field

    def initialize(message = nil, status: nil, code: nil, field: nil)
      super(message || self.class.name)
      @status = status
      @code = code || self.class.default_code
      @field = field
    end

    def self.default_code
      nil
    end

    # The error for an API error answer: the class of its code (else of its status).
    def self.from_answer(status, body)
      err = body.is_a?(Hash) ? body["error"] : nil
      code = err.is_a?(Hash) ? err["code"] : nil
      message = err.is_a?(Hash) ? err["message"] : nil
      field = err.is_a?(Hash) ? err["field"] : nil
      klass = BY_CODE[code] || BY_STATUS[status] || Error
      klass.new(message || "HTTP #{status}", status: status, code: code || klass.default_code, field: field)
    end
  end

  # One class per error code of the API (its "Errors" table).
  class InvalidRequest < Error; def self.default_code = "invalid_request"; end   # 400
  class Unauthenticated < Error; def self.default_code = "unauthenticated"; end  # 401
  class Forbidden < Error; def self.default_code = "forbidden"; end              # 403
  class NotFound < Error; def self.default_code = "not_found"; end               # 404
  class Conflict < Error; def self.default_code = "conflict"; end                # 409
  # An alias's promotion policy refused the move: the message names the requirement that failed
  # with the measured value ("accuracy mean 0.874 over 23 records < min 0.9"). A Conflict (409);
  # an admin may move it anyway with set_alias(..., override_reason: "...").
  class PolicyViolation < Conflict; def self.default_code = "policy_violation"; end # 409
  class Archived < Error; def self.default_code = "archived"; end                # 409
  class PayloadTooLarge < Error; def self.default_code = "payload_too_large"; end # 413
  class IntegrityError < Error; def self.default_code = "integrity_error"; end   # 422 (or a cached copy failing its hash)
  class Throttled < Error; def self.default_code = "throttled"; end              # 429
  class Unavailable < Error; def self.default_code = "unavailable"; end          # 503, or the service unreachable

  class Error
    BY_CODE = {
      "invalid_request" => InvalidRequest, "unauthenticated" => Unauthenticated,
      "forbidden" => Forbidden, "not_found" => NotFound, "conflict" => Conflict, "policy_violation" => PolicyViolation,
      "archived" => Archived, "payload_too_large" => PayloadTooLarge,
      "integrity_error" => IntegrityError, "throttled" => Throttled, "unavailable" => Unavailable
    }.freeze
    BY_STATUS = {
      400 => InvalidRequest, 401 => Unauthenticated, 403 => Forbidden, 404 => NotFound,
      409 => Conflict, 413 => PayloadTooLarge, 422 => IntegrityError, 429 => Throttled,
      502 => Unavailable, 503 => Unavailable, 504 => Unavailable
    }.freeze
  end

  # Every error class, by name (the names DSPy.rb's documentation would use under DSPy::Storage).
  ERROR_CLASSES = %i[Error InvalidRequest Unauthenticated Forbidden NotFound Conflict PolicyViolation Archived
                     PayloadTooLarge IntegrityError Throttled Unavailable].freeze
end
