# frozen_string_literal: true

require_relative "test_helper"

# DSPy.rb "Storage System", section "Versioned Storage": the page's snippet is the class
#
#   class VersionedProgramStorage
#     def initialize(base_storage)
#     def store_version(program, version:, metadata: {})
#       raise ArgumentError, "Invalid version format" unless valid_version?(version)
#     def load_version(signature, version: :latest)
#     def list_versions(signature)        # {version:, storage_id:, created_at:, performance:, size:}, by created_at
#     def rollback_to_version(signature, target_version)
#       # a new version based on the target, with rollback_from / rollback_to / rollback_timestamp
#
# Every method is called as the page defines it, and each answer is checked against the server's.
# Adaptation: "default storage configured once" (the base storage is DSPy::Storage::ProgramStorage.new).
class TestDocVersionedStorage < StorageTest
  def predictor(instruction)
    ClassifyTextPredictor.new(instruction: instruction, demos: [{ text: "great", sentiment: "positive" }])
  end

  def test_versioned_program_storage
    configure_default
    versioned = DSPy::Storage::VersionedProgramStorage.new(DSPy::Storage::ProgramStorage.new)

    # store_version(program, version:, metadata: {})
    ids = {}
    { "1.0.0" => 0.82, "1.1.0" => 0.88, "2.0.0" => 0.91 }.each do |version, score|
      ids[version] = versioned.store_version(predictor("v#{version}"), version: version,
                                                                       metadata: { signature: "ClassifyText", performance: score, optimization_method: :miprov2 })
    end
    listing = server.get("/signatures/ClassifyText/versions?#{q(project: @project)}")["versions"]
    assert_equal ids.to_a, listing.map { |v| [v["version"], v["id"]] }

    # An invalid version is an ArgumentError (as on the page) and stores nothing.
    ["1.0", "v2", "1.0.0.0", ""].each do |bad|
      error = assert_raises(ArgumentError, bad) do
        versioned.store_version(predictor("bad"), version: bad, metadata: { signature: "ClassifyText" })
      end
      assert_match(/Invalid version format/, error.message)
    end
    assert_equal 3, server.get("/signatures/ClassifyText/versions?#{q(project: @project)}")["versions"].size
    # A version that exists is the service's conflict.
    assert_raises(DSPy::Storage::Conflict) do
      versioned.store_version(predictor("again"), version: "1.1.0", metadata: { signature: "ClassifyText" })
    end

    # load_version(signature, version: :latest)
    latest = versioned.load_version("ClassifyText")
    raw_latest = server.get("/signatures/ClassifyText/versions/latest?#{q(project: @project)}")
    assert_equal raw_latest["id"], latest.id
    assert_equal "2.0.0", latest.metadata[:version]
    assert_equal raw_latest["program"], JSON.parse(latest.bytes)
    pinned = versioned.load_version("ClassifyText", version: "1.0.0")
    assert_equal ids["1.0.0"], pinned.id
    assert_equal raw_bytes(ids["1.0.0"]).first, pinned.bytes
    assert_raises(DSPy::Storage::NotFound) { versioned.load_version("ClassifyText", version: "9.9.9") }

    # list_versions(signature)
    versions = versioned.list_versions("ClassifyText")
    expected = listing.sort_by { |v| v["created_at"] }
    assert_equal expected.map { |v| v["version"] }, versions.map { |v| v[:version] }
    versions.zip(expected).each do |mine, theirs|
      assert_equal theirs["id"], mine[:storage_id]
      assert_time_equal theirs["created_at"], mine[:created_at]
      assert_equal theirs["performance"], mine[:performance]
      assert_equal theirs["size"], mine[:size]
    end
    assert_equal %i[version storage_id created_at performance size aliases], versions.first.keys

    # rollback_to_version(signature, target_version): a new latest version, byte-identical to
    # the target, with the rollback metadata; the client's own write is seen at once (no TTL wait).
    new_id = versioned.rollback_to_version("ClassifyText", "1.0.0")
    record = raw_metadata(new_id)
    assert_equal "2.0.1", record["version"]
    assert_equal "2.0.0", record["metadata"]["rollback_from"]
    assert_equal "1.0.0", record["metadata"]["rollback_to"]
    refute_nil record["metadata"]["rollback_timestamp"]
    assert_equal raw_bytes(ids["1.0.0"]).first, raw_bytes(new_id).first
    after = versioned.load_version("ClassifyText", version: :latest)
    assert_equal new_id, after.id
    assert_equal predictor("v1.0.0"), after.program.then { |h| ClassifyTextPredictor.from_h(h) }
    assert_equal "2.0.1", versioned.get_latest_version("ClassifyText")
    assert_nil versioned.get_latest_version("NoSuchSignature")
  end

  # Aliases on the storage (set_alias / load_alias / remove_alias), against the server's.
  def test_aliases
    s = storage
    v1 = s.store(program: predictor("one").to_h, metadata: { signature: "ClassifyText", version: "1.0.0" })
    v2 = s.store(program: predictor("two").to_h, metadata: { signature: "ClassifyText", version: "1.1.0" })
    answer = s.set_alias("ClassifyText", "production", "1.0.0", expected_version: nil)
    assert_equal v1, answer[:id]
    assert_equal v1, s.load_alias("ClassifyText", "production").id
    assert_equal v1, server.get("/signatures/ClassifyText/aliases/production?#{q(project: @project)}")["id"]
    # Compare-and-set: a stale expectation loses.
    assert_raises(DSPyStorage::Conflict) { s.set_alias("ClassifyText", "production", "1.1.0", expected_version: "1.1.0") }
    s.set_alias("ClassifyText", "production", "1.1.0", expected_version: "1.0.0")
    assert_equal v2, s.load_alias("ClassifyText", "production").id, "own alias move seen at once"
    assert_equal(["production"], s.list_versions("ClassifyText").find { |v| v[:id] == v2 }[:aliases])
    s.remove_alias("ClassifyText", "production")
    status, = server.raw(:get, "/signatures/ClassifyText/aliases/production?#{q(project: @project)}")
    assert_equal 404, status
    assert_raises(DSPyStorage::NotFound) { s.load_alias("ClassifyText", "production") }
  end
end
