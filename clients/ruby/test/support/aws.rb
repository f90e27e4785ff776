# frozen_string_literal: true

require "digest"
require "json"
require "net/http"
require "uri"

# The few raw AWS calls the tests make against the local AWS (AWS_ENDPOINT_URL): remove a
# test's table and bucket, and overwrite a stored blob to test the server's integrity check.
# Signed with aws-sigv4 (Debian's ruby-aws-sigv4).
module AwsTestApi
  module_function

  def signer(service)
    require "aws-sigv4"
    Aws::Sigv4::Signer.new(service: service, region: ENV["AWS_REGION"] || ENV["AWS_DEFAULT_REGION"] || "us-east-1",
                           access_key_id: ENV["AWS_ACCESS_KEY_ID"] || "test",
                           secret_access_key: ENV["AWS_SECRET_ACCESS_KEY"] || "test",
                           session_token: ENV["AWS_SESSION_TOKEN"])
  end

  def endpoint(_service) # one endpoint (LocalStack) serves every service
    (ENV["AWS_ENDPOINT_URL"] || raise("no AWS_ENDPOINT_URL in the environment")).sub(%r{/+\z}, "")
  end

  def send_signed(service, method, url, body: "", headers: {})
    uri = URI(url)
    signature = signer(service).sign_request(http_method: method, url: url, headers: headers, body: body)
    Net::HTTP.start(uri.host, uri.port) do |http|
      req = Net::HTTPGenericRequest.new(method, !body.empty?, true, uri.request_uri)
      headers.merge(signature.headers).each { |k, v| req[k] = v }
      req.body = body unless body.empty?
      res = http.request(req)
      [res.code.to_i, res.body.to_s]
    end
  end

  def dynamodb(target, payload)
    send_signed("dynamodb", "POST", "#{endpoint("dynamodb")}/", body: JSON.generate(payload),
                                                                  headers: { "content-type" => "application/x-amz-json-1.0",
                                                                             "x-amz-target" => "DynamoDB_20120810.#{target}" })
  end

  def delete_table(table)
    dynamodb("DeleteTable", { "TableName" => table })
  end

  def s3_url(bucket, key = nil, query = nil)
    path = key ? "/#{bucket}/#{key.split("/").map { |p| URI.encode_www_form_component(p) }.join("/")}" : "/#{bucket}"
    "#{endpoint("s3")}#{path}#{"?#{query}" if query}"
  end

  def list_keys(bucket, prefix = "")
    _, xml = send_signed("s3", "GET", s3_url(bucket, nil, "list-type=2&prefix=#{URI.encode_www_form_component(prefix)}"))
    xml.scan(%r{<Key>([^<]+)</Key>}).flatten
  end

  def put_object(bucket, key, bytes)
    status, text = send_signed("s3", "PUT", s3_url(bucket, key), body: bytes,
                                                                   headers: { "x-amz-content-sha256" => Digest::SHA256.hexdigest(bytes) })
    raise "S3 PUT #{key}: #{status} #{text}" unless status == 200
  end

  def delete_bucket(bucket)
    # Empty it first (programs, archive copies, backups), a page at a time.
    loop do
      keys = list_keys(bucket)
      break if keys.empty?

      keys.each { |k| send_signed("s3", "DELETE", s3_url(bucket, k)) }
    end
    send_signed("s3", "DELETE", s3_url(bucket))
  end
end
