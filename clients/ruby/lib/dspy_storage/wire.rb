# frozen_string_literal: true

require "json"
require "time"
require "date"

module DSPyStorage
  # Ruby values to and from the API's JSON: symbols become strings, times RFC 3339 UTC, durations
  # the API's `90d` / `12h` / `45s` strings; answers come back with symbol keys and times as Time.
  module Wire
    module_function

    # Times of answers that are read back as Time (only these keys, only RFC 3339 strings).
    TIME_KEYS = %i[created_at updated_at timestamp received_at generated_at finished_at started_at
                   restored_at as_of t].freeze

    def active_support_duration?(value)
      defined?(::ActiveSupport::Duration) && value.is_a?(::ActiveSupport::Duration)
    end

    def time?(value)
      value.is_a?(Time) || value.is_a?(DateTime) ||
        (defined?(::ActiveSupport::TimeWithZone) && value.is_a?(::ActiveSupport::TimeWithZone))
    end

    # A time as the API writes it (a Date is its midnight UTC).
    def time(value)
      return value if value.is_a?(String)
      return Time.utc(value.year, value.month, value.day).iso8601(3) if value.is_a?(Date) && !value.is_a?(DateTime)

      value.to_time.utc.iso8601(3)
    end

    # Seconds (Integer/Float), an ActiveSupport duration (`30.days`) or an API string (`"30d"`).
    def seconds(value)
      return value.to_f if value.is_a?(Numeric)
      return value.to_i.to_f if active_support_duration?(value)
      raise ArgumentError, "a duration must be seconds, an ActiveSupport duration or a string like 90d, not #{value.inspect}" unless value.is_a?(String)

      m = /\A\s*(\d+)\s*([smhdw])\s*\z/.match(value)
      raise ArgumentError, "#{value.inspect} is not a duration like 90d, 12h, 30m, 45s or 2w" unless m

      m[1].to_i * { "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400, "w" => 604_800 }.fetch(m[2])
    end

    # A duration as the API writes it: the largest unit that divides it exactly.
    def duration(value)
      return value.strip if value.is_a?(String) && seconds(value)

      secs = seconds(value).round
      raise ArgumentError, "a duration must not be negative (#{value.inspect})" if secs.negative?

      [["w", 604_800], ["d", 86_400], ["h", 3600], ["m", 60]].each do |unit, size|
        return "#{secs / size}#{unit}" if secs.positive? && (secs % size).zero?
      end
      "#{secs}s"
    end

    # A Ruby value as plain JSON data (string keys; times and durations converted).
    def dump(value)
      case value
      when nil, true, false, String, Integer then value
      when Float
        raise ArgumentError, "#{value} is not a finite number" unless value.finite?

        value
      when Symbol then value.to_s
      when Hash then value.each_with_object({}) { |(k, v), h| h[k.to_s] = dump(v) }
      when Array then value.map { |v| dump(v) }
      when Numeric then value.to_f
      else
        return seconds(value).round if active_support_duration?(value)
        return time(value) if time?(value) || value.is_a?(Date)
        return dump(value.to_h) if value.respond_to?(:to_h)

        raise TypeError, "cannot send a #{value.class} as JSON (give a Hash, Array, String, number, Time or Symbol)"
      end
    end

    def generate(value)
      JSON.generate(dump(value))
    end

    # Parses an answer: symbol keys, nothing else changed.
    def parse(text)
      JSON.parse(text, symbolize_names: true)
    end

    # Keys whose values are the caller's data, left as they were stored.
    DATA_KEYS = %i[metadata metrics environment parameters].freeze

    # Turns the RFC 3339 strings under TIME_KEYS of a hash (and of hashes in arrays under it,
    # +depth+ levels down) into Time. The caller's data (metadata, metrics, environment) is left
    # as it was stored.
    def times(value, depth: 3)
      case value
      when Hash
        value.each_with_object({}) do |(k, v), h|
          h[k] = if TIME_KEYS.include?(k) && v.is_a?(String)
                   parse_time(v)
                 elsif depth.positive? && !DATA_KEYS.include?(k)
                   times(v, depth: depth - 1)
                 else
                   v
                 end
        end
      when Array then value.map { |v| times(v, depth: depth) }
      else value
      end
    end

    def parse_time(text)
      Time.iso8601(text)
    rescue ArgumentError
      text
    end

    # Deep symbol keys for values the caller gave (metrics, metadata).
    def symbolize(value)
      case value
      when Hash then value.each_with_object({}) { |(k, v), h| h[k.to_sym] = symbolize(v) }
      when Array then value.map { |v| symbolize(v) }
      else value
      end
    end
  end
end
