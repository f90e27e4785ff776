# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/stub_http"
require "openssl"

# aws_iam: true signs every request with SigV4 for execute-api (through the aws-sigv4 gem). A
# capturing server receives the requests as sent, and an independent implementation of AWS's
# signing algorithm (below, from AWS's specification) recomputes each signature from the test
# credentials: they must be equal, not merely present.
class TestSigV4 < Minitest::Test
  KEY_ID = "AKIDEXAMPLE"
  SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
  TOKEN = "session-token-example"
  REGION = "eu-west-1"

  def setup
    @stub = StubHTTP.new do |req|
      body = if req.path.end_with?("/program")
               '{"a":1}'
             elsif req.path.end_with?("/metadata")
               JSON.generate({ id: "p1", signature: "Sig:x", version: "1.0.0", project: "team:a", metadata: {},
                               sha256: Digest::SHA256.hexdigest('{"a":1}'), size: 7, status: "active",
                               created_at: "2026-12-01T00:00:00.000Z", updated_at: "2026-12-01T00:00:00.000Z" })
             elsif req.path == "/programs"
               '{"id":"p1","signature":"Sig:x","version":"1.0.0"}'
             else
               '{"project":"default","versions":[],"next_cursor":null}'
             end
      headers = { "content-type" => "application/json", "x-dspy-sha256" => Digest::SHA256.hexdigest(body), "x-dspy-program-id" => "p1" }
      [req.method == "POST" ? 201 : 200, headers, body]
    end
  end

  def teardown
    @stub.close
  end

  def hmac(key, data)
    OpenSSL::HMAC.digest("SHA256", key, data)
  end

  def hex(data)
    Digest::SHA256.hexdigest(data)
  end

  # AWS Signature Version 4, from the specification (not through aws-sigv4).
  def expected_signature(req, secret)
    auth = req.headers.fetch("authorization")
    m = %r{\AAWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})\z}.match(auth)
    assert m, auth
    _key_id, date, region, service, signed, _sig = m.captures
    canonical_uri = req.path.split("/", -1).map { |seg| seg.gsub(/[^A-Za-z0-9_.~-]/) { |c| format("%%%02X", c.ord) } }.join("/")
    canonical_query = req.query.split("&").map { |p| p.split("=", 2) }.sort.map { |k, v| "#{k}=#{v}" }.join("&")
    canonical_headers = signed.split(";").map { |h| "#{h}:#{req.headers.fetch(h).strip.squeeze(" ")}\n" }.join
    canonical = [req.method, canonical_uri, canonical_query, canonical_headers, signed, hex(req.body)].join("\n")
    scope = "#{date}/#{region}/#{service}/aws4_request"
    to_sign = ["AWS4-HMAC-SHA256", req.headers.fetch("x-amz-date"), scope, hex(canonical)].join("\n")
    key = hmac(hmac(hmac(hmac("AWS4#{secret}", date), region), service), "aws4_request")
    [OpenSSL::HMAC.hexdigest("SHA256", key, to_sign), m]
  end

  def test_requests_are_signed_for_execute_api
    s = DSPyStorage::ProgramStorage.new(url: @stub.url, aws_iam: true, aws_region: REGION, project: "team:a",
                                        aws_credentials: { access_key_id: KEY_ID, secret_access_key: SECRET, session_token: TOKEN },
                                        cache_dir: false)
    s.list_versions("Sig:x")
    s.store(program: { "instructions" => "Answer ~briefly~ (é)" }, metadata: { signature: "Sig:x" })
    s.load_version("Sig:x", "1.0.0")
    requests = @stub.captured
    assert_equal 4, requests.size # versions, store, version bytes, metadata
    requests.each do |req|
      expected, m = expected_signature(req, SECRET)
      assert_equal expected, m[6], "#{req.method} #{req.target}"
      assert_equal [KEY_ID, REGION, "execute-api"], [m[1], m[3], m[4]]
      assert_includes m[5].split(";"), "host"
      assert_equal TOKEN, req.headers["x-amz-security-token"]
      assert_nil req.headers["authorization"][/Bearer/]
    end
    store = requests.find { |r| r.method == "POST" }
    assert_includes store.headers["authorization"][/SignedHeaders=([^,]+)/, 1].split(";"), "x-amz-content-sha256"
    assert_equal hex(store.body), store.headers["x-amz-content-sha256"], "the body is covered"
    assert_includes requests.first.target, "Sig%3Ax", "path segments percent-encoded"
    assert_includes requests.first.target, "project=team%3Aa"
    # A wrong secret does not give the same signature (the check can fail).
    refute_equal expected_signature(requests.first, "other-secret").first, requests.first.headers["authorization"][/Signature=(\h+)/, 1]
  end

  def test_credentials_from_the_environment
    old = ENV.to_h.slice("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
    ENV["AWS_ACCESS_KEY_ID"] = KEY_ID
    ENV["AWS_SECRET_ACCESS_KEY"] = SECRET
    ENV.delete("AWS_SESSION_TOKEN")
    ENV["AWS_REGION"] = REGION
    DSPyStorage::ProgramStorage.new(url: @stub.url, aws_iam: true, cache_dir: false).list_versions("S")
    req = @stub.captured.first
    expected, m = expected_signature(req, SECRET)
    assert_equal expected, m[6]
    assert_nil req.headers["x-amz-security-token"]
  ensure
    %w[AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_REGION].each { |k| old&.key?(k) ? ENV[k] = old[k] : ENV.delete(k) }
  end

  def test_a_token_is_a_bearer_header
    DSPyStorage::ProgramStorage.new(url: @stub.url, token: "t0k3n", cache_dir: false).list_versions("S")
    assert_equal "Bearer t0k3n", @stub.captured.first.headers["authorization"]
  end
end
