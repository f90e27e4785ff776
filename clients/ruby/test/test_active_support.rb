# frozen_string_literal: true

require_relative "test_helper"
require "open3"
require "rbconfig"

# The snippets' ActiveSupport helpers as written on the page, when ActiveSupport is installed
# (Debian: ruby-activesupport; clients/ruby/test.sh installs it and sets
# DSPY_STORAGE_RUBY_ACTIVESUPPORT=1, which makes its absence a failure).
class TestActiveSupport < StorageTest
  def test_snippets_with_active_support_helpers
    available = system(RbConfig.ruby, "-e", 'require "active_support/all"', err: File::NULL)
    unless available
      flunk "ActiveSupport is required (DSPY_STORAGE_RUBY_ACTIVESUPPORT=1) but not installed" if ENV["DSPY_STORAGE_RUBY_ACTIVESUPPORT"] == "1"
      skip "ActiveSupport is not installed (apt-get install ruby-activesupport)"
    end
    here = File.expand_path(__dir__)
    env = { "DSPY_STORAGE_TEST_SERVER_URL" => server.url }
    out, err, status = Open3.capture3(env, RbConfig.ruby, "-I", File.expand_path("../lib", here), "-I", here,
                                      File.join(here, "active_support", "snippets_with_active_support.rb"))
    assert status.success?, "#{out}\n#{err}"
    assert_match(/1 runs, \d+ assertions, 0 failures, 0 errors, 0 skips/, out)
  end
end
