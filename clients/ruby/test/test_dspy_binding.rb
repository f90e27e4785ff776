# frozen_string_literal: true

require_relative "test_helper"
require "open3"
require "rbconfig"

# `require "dspy_storage/dspy"` binds the classes at DSPy::Storage::... and, when DSPy.rb is
# present, replaces its local-file classes of the same names, saying so once on stderr; without
# that require DSPy.rb's classes are untouched. Each case runs in a Ruby process of its own, with
# a DSPy.rb stand-in on the load path where DSPy.rb is meant to be installed.
class TestDSPyBinding < Minitest::Test
  LIB = File.expand_path("../lib", __dir__)
  FAKE_DSPY = File.expand_path("fixtures/fake_dspy_rb/lib", __dir__)

  def run_ruby(code, with_dspy:)
    args = [RbConfig.ruby, "-I", LIB]
    args += ["-I", FAKE_DSPY] if with_dspy
    out, err, status = Open3.capture3({ "DSPY_STORAGE_URL" => "http://127.0.0.1:9" }, *args, "-e", code)
    assert status.success?, "ruby failed: #{err}\n#{out}"
    [out, err]
  end

  def test_without_dspy_rb_the_names_are_bound_quietly
    out, err = run_ruby(<<~RUBY, with_dspy: false)
      require "dspy_storage/dspy"
      p DSPy::Storage::ProgramStorage.equal?(DSPyStorage::ProgramStorage)
      p DSPy::Storage::StorageMonitor.equal?(DSPyStorage::StorageMonitor)
      p DSPy::Storage::NotFound.equal?(DSPyStorage::NotFound)
      p DSPy::Storage.current.url
      p defined?(DSPy::VERSION).nil?
    RUBY
    assert_equal "true\ntrue\ntrue\n\"http://127.0.0.1:9\"\ntrue\n", out
    assert_equal "", err
  end

  def test_with_dspy_rb_its_local_classes_are_replaced_and_that_is_said_once
    out, err = run_ruby(<<~RUBY, with_dspy: true)
      require "dspy_storage/dspy"
      require "dspy_storage/dspy"
      require "dspy"
      load File.join(#{LIB.dump}, "dspy_storage", "dspy.rb")
      p DSPy::VERSION
      p DSPy::Storage::ProgramStorage.equal?(DSPyStorage::ProgramStorage)
      p DSPy::Storage::StorageManager.equal?(DSPyStorage::StorageManager)
      p DSPy::Storage::ProgramStorage.instance_method(:initialize).source_location.first.include?("dspy_storage/program_storage.rb")
      p DSPy::Storage::ProgramStorage.method_defined?(:save_program)
    RUBY
    assert_equal "\"0.0.0-stand-in\"\ntrue\ntrue\ntrue\nfalse\n", out
    notes = err.lines.grep(/dspy-storage:/)
    assert_equal 1, notes.size, err
    assert_match(/DSPy::Storage::ProgramStorage, DSPy::Storage::StorageManager now use the dspy-storage service \(http:\/\/127\.0\.0\.1:9\) instead of DSPy\.rb's local files/, notes.first)
  end

  def test_dspy_rb_loaded_first_is_replaced_too
    out, err = run_ruby(<<~RUBY, with_dspy: true)
      require "dspy"
      theirs = DSPy::Storage::ProgramStorage
      require "dspy_storage/dspy"
      p theirs.equal?(DSPy::Storage::ProgramStorage)
      p DSPy::Storage::ProgramStorage.equal?(DSPyStorage::ProgramStorage)
    RUBY
    assert_equal "false\ntrue\n", out
    assert_equal 1, err.lines.grep(/dspy-storage:/).size
  end

  def test_without_the_binding_dspy_rb_is_untouched
    out, err = run_ruby(<<~RUBY, with_dspy: true)
      require "dspy"
      require "dspy_storage"
      p DSPy::Storage::ProgramStorage.method_defined?(:save_program)
      p DSPy::Storage::ProgramStorage.equal?(DSPyStorage::ProgramStorage)
      p DSPy::Storage.respond_to?(:current)
      p DSPyStorage::ProgramStorage.name
    RUBY
    assert_equal "true\nfalse\nfalse\n\"DSPyStorage::ProgramStorage\"\n", out
    assert_equal "", err
  end
end
