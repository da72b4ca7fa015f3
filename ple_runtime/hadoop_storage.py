"""Files and folders through Hadoop's FileSystem (the Spark JVM's), so the same code serves
local paths, `file:` URIs and remote storage (`s3a://`, `hdfs://`, `abfss://`, ...) with the
credentials and settings the Spark session already has. No Spark job is started."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileEntry:
    path: str      # the folder as given, plus "/" + name (messages name what the user typed)
    name: str
    size: int


class HadoopFileSystem:
    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _resolve(self, path: str):
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath.getFileSystem(self._conf), jpath

    def exists(self, path: str) -> bool:
        fs, jpath = self._resolve(path)
        return bool(fs.exists(jpath))

    def is_dir(self, path: str) -> bool:
        fs, jpath = self._resolve(path)
        return bool(fs.exists(jpath) and fs.getFileStatus(jpath).isDirectory())

    def list_files(self, folder: str, include_hidden: bool = False) -> list[FileEntry]:
        """Files directly in `folder`, sorted by name; names starting with '.' or '_' (hidden,
        markers, files being written) are left out unless `include_hidden`, as Spark does."""
        fs, jpath = self._resolve(folder)
        if not fs.exists(jpath):
            return []
        entries = []
        for status in fs.listStatus(jpath):
            name = status.getPath().getName()
            if status.isFile() and (include_hidden or not name.startswith((".", "_"))):
                entries.append(FileEntry(f"{folder.rstrip('/')}/{name}", name, int(status.getLen())))
        return sorted(entries, key=lambda e: e.name)

    def head(self, path: str, size: int) -> bytes:
        """The first `size` bytes of a file (fewer when it is shorter). Raises OSError with
        the storage's own reason (permission denied, not found) when it cannot be opened."""
        from py4j.protocol import Py4JJavaError

        fs, jpath = self._resolve(path)
        try:
            stream = fs.open(jpath)
        except Py4JJavaError as err:
            raise OSError(str(err.java_exception.getMessage())) from None
        try:
            data = bytearray()
            while len(data) < size:
                byte = stream.read()
                if byte < 0:
                    break
                data.append(byte)
            return bytes(data)
        finally:
            stream.close()
