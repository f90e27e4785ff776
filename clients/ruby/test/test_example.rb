# frozen_string_literal: true

require_relative "test_helper"
require "open3"
require "rbconfig"

# The gem's example (examples/quickstart.rb), run as a user would against `dspy-storage serve`.
class TestExample < StorageTest
  def self.own_server?
    true
  end

  def test_quickstart_runs
    script = File.expand_path("../examples/quickstart.rb", __dir__)
    env = { "DSPY_STORAGE_URL" => server.url, "DSPY_STORAGE_CACHE_DIR" => @cache_dir }
    2.times do |run|
      out, err, status = Open3.capture3(env, RbConfig.ruby, "-I", File.expand_path("../lib", __dir__), script)
      assert status.success?, err
      version = "1.0.#{run}"
      assert_match(/\Astored [0-9a-f-]{36} as ClassifyText v#{version}; production -> v#{version}\n/, out)
      assert_match(/^loaded v#{version} \(sha256 \h{12}, \d+ bytes\): Classify the sentiment/, out)
      assert_match(/^accuracy now 0.92 \(stable\)$/, out)
      assert_match(/^search: #{run + 1} program\(s\), best 0.91$/, out)
    end
    assert_equal "1.0.1", server.get("/signatures/ClassifyText/aliases/production")["version"]
  end
end
