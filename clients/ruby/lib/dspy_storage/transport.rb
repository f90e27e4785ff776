# frozen_string_literal: true

require "net/http"
require "uri"
require "json"
require "openssl"

module DSPyStorage
  # One HTTP answer: status, headers (lower-case names) and the body bytes.
  Response = Struct.new(:status, :headers, :body) do
    def header(name)
      headers[name.downcase]
    end

    def json
      body.nil? || body.empty? ? nil : JSON.parse(body)
    end
  end

  # HTTP to the service: keep-alive connections (a small pool, thread-safe), a bearer token or a
  # SigV4 signature (execute-api, through the aws-sigv4 gem), and retries with jittered backoff of
  # 429/503 answers and connection failures for requests that are safe to send twice.
  class Transport
    RETRY_STATUSES = [429, 502, 503, 504].freeze
    # No answer arrived: refused, reset, timed out, closed early, or not HTTP.
    NETWORK_ERRORS = [
      SystemCallError, Net::OpenTimeout, Net::ReadTimeout, Net::WriteTimeout, Net::HTTPBadResponse,
      EOFError, IOError, SocketError, OpenSSL::SSL::SSLError
    ].freeze

    attr_reader :base_url, :retries

    # +sleeper+ is how the transport waits between attempts (tests count the waits).
    def initialize(url:, token: nil, aws_iam: false, aws_region: nil, aws_credentials: nil,
                   timeout: 10, retries: 3, backoff: 0.2, sleeper: nil, user_agent: nil)
      @uri = URI.parse(url.to_s.sub(%r{/+\z}, ""))
      raise ArgumentError, "url must be http(s)://host[:port][/prefix], not #{url.inspect}" unless @uri.is_a?(URI::HTTP) && @uri.host

      @base_url = @uri.to_s
      @prefix = @uri.path.to_s
      @token = token
      @timeout = timeout
      @retries = Integer(retries)
      @backoff = backoff
      @sleeper = sleeper || ->(seconds) { sleep(seconds) }
      @user_agent = user_agent || "dspy-storage-ruby/#{VERSION} ruby/#{RUBY_VERSION}"
      @signer = aws_iam ? build_signer(aws_region, aws_credentials) : nil
      @pool = []
      @lock = Mutex.new
    end

    # Sends one request. +path+ is already percent-encoded, +query+ a Hash (nil values dropped),
    # +body+ a String (JSON). Answers the final Response (any status); raises Unavailable when no
    # answer arrived after the retries. +idempotent+: may the request be sent twice?
    def request(method, path, query: nil, body: nil, headers: {}, idempotent: false)
      target = @prefix + path
      qs = encode_query(query)
      target += "?#{qs}" unless qs.empty?
      attempt = 0
      loop do
        begin
          response = perform(method, target, body, headers)
          if idempotent && RETRY_STATUSES.include?(response.status) && attempt < @retries
            attempt += 1
            pause(attempt, response.header("retry-after"))
            next
          end
          return response
        rescue *NETWORK_ERRORS => e
          if idempotent && attempt < @retries
            attempt += 1
            pause(attempt, nil)
            next
          end
          raise Unavailable.new("dspy-storage at #{@base_url} is unreachable: #{e.class}: #{e.message}", code: "unavailable")
        end
      end
    end

    def close
      @lock.synchronize do
        @pool.each { |http| http.finish if http.started? }
        @pool.clear
      end
    end

    def self.segment(value)
      value.to_s.b.gsub(/[^A-Za-z0-9_.\-~]/) { |c| format("%%%02X", c.ord) }
    end

    private

    def encode_query(query)
      return "" if query.nil?

      query.compact.map { |k, v| "#{Transport.segment(k)}=#{Transport.segment(v)}" }.join("&")
    end

    def pause(attempt, retry_after)
      wait = retry_after.to_s =~ /\A\d+(\.\d+)?\z/ ? [retry_after.to_f, 10.0].min : nil
      wait ||= @backoff * (2**(attempt - 1)) * (0.5 + rand)
      @sleeper.call(wait)
    end

    def perform(method, target, body, headers)
      req = Net::HTTPGenericRequest.new(method.to_s.upcase, !body.nil?, method.to_s.upcase != "HEAD", target)
      req["user-agent"] = @user_agent
      req["accept"] = "application/json"
      if body
        req["content-type"] = "application/json"
        req.body = body
      end
      headers.each { |k, v| req[k] = v }
      req["authorization"] = "Bearer #{@token}" if @token && !@signer
      sign(req, target, body) if @signer
      http = checkout
      ok = false
      begin
        res = http.request(req)
        ok = true
        Response.new(res.code.to_i, res.each_header.to_h, res.body || "")
      ensure
        ok ? checkin(http) : discard(http)
      end
    end

    def checkout
      http = @lock.synchronize { @pool.pop }
      return http if http&.started?

      http = Net::HTTP.new(@uri.host, @uri.port)
      http.use_ssl = @uri.scheme == "https"
      http.open_timeout = @timeout
      http.read_timeout = @timeout
      http.write_timeout = @timeout
      http.keep_alive_timeout = 2
      http.max_retries = 0 # Net::HTTP would resend PUT/DELETE by itself; retries are decided above
      http.start
      http
    end

    def checkin(http)
      @lock.synchronize { @pool.size < 8 ? @pool.push(http) : http.finish }
    end

    def discard(http)
      http.finish if http.started?
    rescue IOError
      nil
    end

    # --- SigV4 (execute-api) ---------------------------------------------------------------------

    def build_signer(region, credentials)
      begin
        require "aws-sigv4"
      rescue LoadError
        raise ArgumentError, "aws_iam: true needs the aws-sigv4 gem (Debian: apt-get install ruby-aws-sigv4; else gem install aws-sigv4)"
      end
      region ||= ENV["AWS_REGION"] || ENV["AWS_DEFAULT_REGION"] || region_from_host(@uri.host)
      raise ArgumentError, "aws_iam: true needs a region (aws_region:, AWS_REGION or an execute-api host)" unless region

      options = { service: "execute-api", region: region }
      provider = credentials_provider(credentials)
      raise ArgumentError, "aws_iam: true needs credentials (aws_credentials:, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or aws-sdk-core's provider chain)" unless provider

      Aws::Sigv4::Signer.new(**options, credentials_provider: provider)
    end

    def region_from_host(host)
      host.to_s[/\.execute-api\.([a-z0-9-]+)\.amazonaws\.com\z/, 1]
    end

    # Explicit credentials (an object with access_key_id/secret_access_key[/session_token], a
    # Hash of those, or a provider answering #credentials), else aws-sdk-core's chain when that
    # gem is loaded, else the environment variables.
    def credentials_provider(credentials)
      case credentials
      when nil
        if defined?(::Aws::CredentialProviderChain)
          chain = ::Aws::CredentialProviderChain.new.resolve
          return chain if chain
        end
        return nil unless ENV["AWS_ACCESS_KEY_ID"] && ENV["AWS_SECRET_ACCESS_KEY"]

        StaticCredentials.new(ENV["AWS_ACCESS_KEY_ID"], ENV["AWS_SECRET_ACCESS_KEY"], ENV["AWS_SESSION_TOKEN"])
      when Hash
        StaticCredentials.new(credentials.fetch(:access_key_id), credentials.fetch(:secret_access_key), credentials[:session_token])
      else
        return credentials if credentials.respond_to?(:credentials)

        StaticCredentials.new(credentials.access_key_id, credentials.secret_access_key,
                              credentials.respond_to?(:session_token) ? credentials.session_token : nil)
      end
    end

    # A credentials provider for the signer (answers #credentials and #set?).
    StaticCredentials = Struct.new(:access_key_id, :secret_access_key, :session_token) do
      def credentials
        self
      end

      def set?
        !access_key_id.to_s.empty? && !secret_access_key.to_s.empty?
      end
    end

    def sign(req, target, body)
      req["host"] = host_header
      signed = @signer.sign_request(
        http_method: req.method,
        url: "#{@uri.scheme}://#{host_header}#{target}",
        headers: { "host" => host_header, "content-type" => req["content-type"] }.compact,
        body: body || ""
      )
      signed.headers.each { |k, v| req[k] = v }
    end

    def host_header
      @uri.port == @uri.default_port ? @uri.host : "#{@uri.host}:#{@uri.port}"
    end
  end
end
